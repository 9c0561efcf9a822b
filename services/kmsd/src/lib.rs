//! kmsd
