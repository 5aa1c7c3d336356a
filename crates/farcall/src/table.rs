//! The objects a host holds for its peers.
//!
//! Each object gets one object id however often it is sent; each proxy
//! sent gets a reference id, and the object lives while any reference is
//! alive. A reference sent over a link is also recorded as held by that
//! link, so when the link goes away (the peer closed, or its process died)
//! the host releases what it held instead of keeping it forever.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::value::ObjectRef;

/// Objects held for peers, with one reference id per proxy sent.
#[derive(Default)]
pub(crate) struct ObjectTable {
    next_obj_id: u64,
    next_ref_id: u64,
    objects: HashMap<u64, Entry>,
    by_identity: HashMap<usize, u64>,
    /// References held by each link, and which link holds each reference.
    held: HashMap<u64, HashSet<u64>>,
    holder: HashMap<u64, (u64, u64)>,
    /// Forwarded references dropped by this host before their
    /// `farcall_share` arrived (see [`ObjectTable::release_forwarded`]).
    unneeded: HashSet<u64>,
}

/// Most remembered [`ObjectTable::release_forwarded`] references.
const MAX_UNNEEDED: usize = 4096;

struct Entry {
    obj: ObjectRef,
    identity: usize,
    refs: HashSet<u64>,
}

impl ObjectTable {
    /// Drops a forwarded reference that reached its own home (see
    /// `Host::release_forwarded`); one whose `farcall_share` has not been
    /// run yet is remembered, and the share then adds nothing.
    pub(crate) fn release_forwarded(&mut self, obj_id: u64, ref_id: u64) -> Option<ObjectRef> {
        match self.release(obj_id, Some(ref_id)) {
            Ok(freed) => freed,
            Err(_) => {
                if self.unneeded.len() >= MAX_UNNEEDED {
                    self.unneeded.clear();
                }
                self.unneeded.insert(ref_id);
                None
            }
        }
    }

    /// Adds reference `new_ref` to object `obj_id`, whose reference
    /// `ref_id` its holder passed on (`farcall_share`); held by no link:
    /// its new holder releases it.
    pub(crate) fn share(&mut self, obj_id: u64, ref_id: u64, new_ref: u64) -> Result<()> {
        if self.unneeded.remove(&new_ref) {
            return Ok(()); // its receiver, this host, dropped it already
        }
        let entry = self
            .objects
            .get_mut(&obj_id)
            .ok_or_else(|| Error::key_error(format!("Invalid proxy object ID {obj_id}")))?;
        if !entry.refs.contains(&ref_id) {
            return Err(Error::key_error(format!(
                "reference {ref_id} to object {obj_id} was already released"
            )));
        }
        entry.refs.insert(new_ref);
        Ok(())
    }

    /// Registers one more reference to `obj` (held by link `holder`, if
    /// we can see it leave); the same object keeps its id.
    pub(crate) fn register(&mut self, obj: &ObjectRef, holder: Option<u64>) -> (u64, u64) {
        let identity = obj.identity();
        let obj_id = match self.by_identity.get(&identity) {
            Some(&id) => id,
            None => {
                let id = self.next_obj_id;
                self.next_obj_id += 1;
                self.by_identity.insert(identity, id);
                let entry = Entry {
                    obj: obj.clone(),
                    identity,
                    refs: HashSet::new(),
                };
                self.objects.insert(id, entry);
                id
            }
        };
        let ref_id = self.next_ref_id;
        self.next_ref_id += 1;
        self.objects
            .get_mut(&obj_id)
            .expect("inserted above")
            .refs
            .insert(ref_id);
        if let Some(link) = holder {
            self.held.entry(link).or_default().insert(ref_id);
            self.holder.insert(ref_id, (link, obj_id));
        }
        (obj_id, ref_id)
    }

    /// The object with id `obj_id`, if it is held.
    pub(crate) fn get(&self, obj_id: u64) -> Option<ObjectRef> {
        self.objects.get(&obj_id).map(|e| e.obj.clone())
    }

    /// Number of objects held.
    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// Releases one reference (all of them when `ref_id` is `None`, as
    /// pyacq's older clients send); returns the object when it was the
    /// last, to be dropped outside the lock.
    pub(crate) fn release(
        &mut self,
        obj_id: u64,
        ref_id: Option<u64>,
    ) -> Result<Option<ObjectRef>> {
        let entry = self
            .objects
            .get_mut(&obj_id)
            .ok_or_else(|| Error::key_error(format!("Invalid proxy object ID {obj_id}")))?;
        match ref_id {
            Some(r) if !entry.refs.remove(&r) => {
                return Err(Error::key_error(format!(
                    "reference {r} to object {obj_id} was already released"
                )))
            }
            Some(r) => forget_holder(&mut self.held, &mut self.holder, r),
            None => {
                for r in std::mem::take(&mut entry.refs) {
                    forget_holder(&mut self.held, &mut self.holder, r);
                }
            }
        }
        if !entry.refs.is_empty() {
            return Ok(None);
        }
        let entry = self.objects.remove(&obj_id).expect("present");
        self.by_identity.remove(&entry.identity);
        Ok(Some(entry.obj))
    }

    /// Releases every reference link `holder` holds; returns the objects
    /// that were freed, to be dropped outside the lock.
    pub(crate) fn release_holder(&mut self, holder: u64) -> Vec<ObjectRef> {
        let refs = self.held.remove(&holder).unwrap_or_default();
        let mut freed = Vec::new();
        for r in refs {
            if let Some((_, obj_id)) = self.holder.get(&r).copied() {
                if let Ok(Some(obj)) = self.release(obj_id, Some(r)) {
                    freed.push(obj);
                }
            }
        }
        freed
    }

    /// Forgets every object; returns them, to be dropped outside the lock.
    pub(crate) fn take_all(&mut self) -> Vec<ObjectRef> {
        self.by_identity.clear();
        self.held.clear();
        self.holder.clear();
        std::mem::take(&mut self.objects)
            .into_values()
            .map(|e| e.obj)
            .collect()
    }
}

fn forget_holder(
    held: &mut HashMap<u64, HashSet<u64>>,
    holder: &mut HashMap<u64, (u64, u64)>,
    ref_id: u64,
) {
    if let Some((link, _)) = holder.remove(&ref_id) {
        if let Some(refs) = held.get_mut(&link) {
            refs.remove(&ref_id);
            if refs.is_empty() {
                held.remove(&link);
            }
        }
    }
}
