//! Memory shared between Python objects and the engine without copies.
//!
//! Outgoing, a `bytes` object or a large numpy array is wrapped as a
//! `Bytes` that keeps the Python object alive and points into its memory:
//! the transport writes straight from it. Incoming, a received buffer is
//! exposed to numpy through the buffer protocol ([`RecvBuffer`]), so the
//! array is built over the bytes the socket was read into.

use std::os::raw::c_int;

use bytes::{Bytes, BytesMut};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Keeps a Python object alive while the engine reads its memory.
struct Pinned {
    _owner: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory is owned by `_owner`, which is kept alive (Py is
// Send; its decref without the GIL is deferred by PyO3) and is never
// written through this handle. bytes objects are immutable; arrays are
// documented as not to be modified while a call sending them is in flight.
unsafe impl Send for Pinned {}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len describe memory owned by `_owner`, alive as long
        // as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The contents of a `bytes` object, shared (no copy).
pub fn pinned_bytes(b: &Bound<'_, PyBytes>) -> Bytes {
    let data = b.as_bytes();
    if data.len() < 256 {
        // Copying a few bytes is cheaper than pinning.
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(Pinned {
        ptr: data.as_ptr(),
        len: data.len(),
        _owner: b.clone().into_any().unbind(),
    })
}

/// The data of a numpy array, C-ordered, shared when it already is (else
/// one copy into a contiguous array).
pub fn pinned_array(arr: &Bound<'_, PyAny>, nbytes: usize) -> PyResult<Bytes> {
    let contiguous = arr.getattr("flags")?.getattr("c_contiguous")?.is_truthy()?;
    let arr = if contiguous {
        arr.clone()
    } else {
        let np = PyModule::import(arr.py(), "numpy")?;
        np.call_method1("ascontiguousarray", (arr,))?
    };
    let address: usize = arr
        .getattr("__array_interface__")?
        .get_item("data")?
        .get_item(0)?
        .extract()?;
    Ok(Bytes::from_owner(Pinned {
        ptr: address as *const u8,
        len: nbytes,
        _owner: arr.unbind(),
    }))
}

/// The memory of a contiguous byte buffer (a `memoryview`, a
/// `PickleBuffer.raw()`), shared: the object, which holds its exporter's
/// view, is kept alive while the engine reads it.
pub fn pinned_memory(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let view = pyo3::buffer::PyBuffer::<u8>::get(obj)?;
    if !view.is_c_contiguous() {
        return Ok(Bytes::from(view.to_vec(obj.py())?));
    }
    let (ptr, len) = (view.buf_ptr() as *const u8, view.len_bytes());
    // The temporary view goes; `obj` keeps the memory (a memoryview holds
    // its own view of the exporter until it is released).
    drop(view);
    if len < 256 {
        // SAFETY: ptr/len describe memory `obj` keeps alive, held here.
        return Ok(Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts(ptr, len)
        }));
    }
    Ok(Bytes::from_owner(Pinned {
        ptr,
        len,
        _owner: obj.clone().unbind(),
    }))
}

/// Received bytes, exposed to Python as a writable buffer.
#[pyclass(module = "farcall._native", frozen)]
pub struct RecvBuffer {
    data: BytesMut,
}

impl RecvBuffer {
    /// Takes the received bytes; copies them only when they are shared
    /// with other values (small data inside a message body).
    pub fn new(data: Bytes) -> Self {
        let data = data
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        RecvBuffer { data }
    }
}

impl Drop for RecvBuffer {
    /// Nothing refers to the memory any more (a buffer view keeps its
    /// exporter alive): large buffers go back to the engine's pool, so the
    /// next large array is received into memory already paged in.
    fn drop(&mut self) {
        farcall::channel::large::recycle(std::mem::take(&mut self.data));
    }
}

#[pymethods]
impl RecvBuffer {
    /// Exports the bytes, writable, through the buffer protocol.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let (ptr, len) = {
            let me = slf.get();
            (me.data.as_ptr() as *mut std::ffi::c_void, me.data.len())
        };
        // SAFETY: the memory belongs to `slf`, which the view keeps alive
        // (PyBuffer_FillInfo takes a reference to the exporter). Writes
        // through the view land in memory only this buffer owns.
        let rc = ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr, len as isize, 0, flags);
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
