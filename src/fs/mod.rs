//! The file interface's semantics, free of FUSE: paths, virtual files, views, control and config.
