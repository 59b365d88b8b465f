//! The thin FUSE adapter: each `fuser::Filesystem` callback calls one function of [`crate::fs`].
