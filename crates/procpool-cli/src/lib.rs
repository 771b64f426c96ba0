//! The pieces of the `procpool` command, as a library so that they can be tested.
pub mod api;
pub mod crawl;
