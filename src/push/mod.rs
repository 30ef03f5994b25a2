//! Web Push (docs/protocol.md#web-push): what herald needs to reach a browser with no tab open.
//! So far the server's VAPID key, which identifies herald to the browsers' push services.

pub mod vapid;

pub use vapid::VapidKey;
