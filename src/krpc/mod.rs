//! KRPC (BEP 5, with BEP 32, 33, 42, 43 and 51): the DHT's message layer.
//!
//! * [`raw`]: one allocation-free pass over a datagram that picks out every
//!   known key as a borrowed slice.
//! * [`message`]: typed, validated messages and their encoders, which write
//!   keys in sorted order straight into the output buffer.
//! * [`compact`]: compact node and peer info.
//! * [`scrape`]: BEP 33 bloom filters and the swarm-size estimate.
//! * [`token`]: announce tokens (keyed SHA-1, two rotating secrets).
//! * [`tid`]: transaction ids that carry their origin shard.
//!
//! What gets a reply is a policy decision made by the node; this layer only
//! says what a datagram is. [`message::KrpcError`] separates garbage (drop
//! silently: never amplify) from a well-formed query with bad arguments
//! (answer with the error code and the query's `t`).

pub mod compact;
pub mod message;
pub mod raw;
pub mod scrape;
pub mod tid;
pub mod token;

pub use compact::NodeInfo;
pub use message::{
    decode, Body, ErrorCode, ErrorMsg, Header, KrpcError, Message, Method, Query, Response,
    ResponseBody, SampleError, SampleReply, Want,
};

#[cfg(test)]
mod tests;
