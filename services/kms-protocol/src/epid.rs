//! placeholder, owned by the products helper
