//! Resolves what the user names with `--product` (SKU name, group name or GUID) into the
//! identifiers a client sends.

use kms_protocol::products::{Catalog, ProductChoice};

/// Errors resolving a product.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProductError {
    /// Nothing in the catalog matches.
    #[error("unknown product {0:?}; `kmsctl products` lists the known names")]
    Unknown(String),
}

/// Resolves one product query.
pub fn resolve(catalog: &Catalog, query: &str) -> Result<ProductChoice, ProductError> {
    catalog
        .resolve_product(query)
        .ok_or_else(|| ProductError::Unknown(query.to_string()))
}
