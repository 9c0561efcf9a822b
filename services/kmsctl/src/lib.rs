//! kmsctl
