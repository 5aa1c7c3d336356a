//! The wire protocol: messages, requests, replies and the typed commands
//! they carry. Frames are parsed here and nowhere else; docs/protocol.md
//! is the reference this module follows.
//!
//! - [`action`]: the names on the wire (actions, return types, sync modes).
//! - [`request`]: a request's frames, `[req_id, action, return_type,
//!   ser_type, opts, buffers...]`, parsed and built.
//! - [`reply`]: replies and disconnect notices, parsed and built.
//! - [`command`]: one typed description per action, its options parsed
//!   and built side by side.
//! - [`message`]: what a native link carries: requests (with their call
//!   chain), replies, hellos, cancellations and heartbeats.

pub mod action;
pub mod command;
pub mod message;
pub mod reply;
pub mod request;

pub use action::{Action, ReturnType, SyncMode};
pub use command::Command;
pub use message::{Beat, Message};
pub use reply::{
    disconnect_frames, error_value, reply_frames, reply_frames_shaped, ErrorShape, Reply,
};
pub use request::{request_frames, BadRequest, Opts, Request};

/// A message as moved by a transport: a list of frames.
pub use crate::channel::frame::Frames;
