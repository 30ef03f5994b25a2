//! Web Push (docs/protocol.md#web-push): reaching a browser with no tab open. The server's
//! VAPID key (`vapid`), which endpoints herald may contact (`endpoint`), one push as a push
//! service receives it (`message`, its body encrypted by `encrypt`), and the pusher that works
//! through the store's queue of pushes owed (`deliver`), at a slower pace while publishes
//! come in a burst (`pressure`).

pub mod deliver;
pub mod encrypt;
pub mod endpoint;
pub mod message;
pub mod pressure;
pub mod vapid;

pub use vapid::VapidKey;
