//! The product catalog: KMS applications, product groups (one per KMS counted ID), count
//! groups and SKUs.
//!
//! This module owns the product data a host needs to decide whether to serve a request, which
//! pool of client machine IDs counts it, what minimum count its clients expect, and which host
//! key (CSVLK) stands behind the ePID it answers with. The data is compiled in from
//! `catalog.toml` (beside this file) and an operator can extend or override it at run time
//! with a file in the same format, passed as text to [`Catalog::extend_from_toml`] (this crate
//! does no file I/O).
//!
//! # Data file format
//!
//! ```toml
//! [[group]]                          # one KMS counted ID = one host licence
//! name           = "windows-10-11"   # stable slug used in config: [a-z0-9-]
//! display        = "Windows 10/11 (Volume)"
//! kms_counted_id = "58e2134f-8e11-4d17-9cb2-91069c151148"
//! application    = "windows"         # windows | office2010 | office2013plus
//! kind           = "client"          # client | server | office
//! minimum_count  = 25                # N policy, 1..=1000
//! protocol       = 6                 # default KMS protocol: 4, 5 or 6
//! count_group    = "windows"         # optional: windows | office2010 | office
//! csvlk = { epid_group_id = 206, key_id_min = 390000000, key_id_max = 405000000,
//!           min_host_build = 9200, release_year = 2015 }   # optional
//!
//! [[sku]]
//! name    = "Windows 10 Enterprise"
//! aliases = ["Windows 11 Enterprise"]                # optional
//! id      = "73111121-5638-40f6-bc11-f1d7b0d64300"
//! group   = "windows-10-11"
//! ```
//!
//! A group is keyed by `name` and a SKU by `id`: an entry with an existing key replaces the
//! old one in place, anything else is added. A file is applied whole or not at all. The
//! first SKU of a group is its default SKU ([`ProductChoice::sku_id`]). Unknown keys are
//! rejected. The comment at the top of `catalog.toml` documents each field in more detail.
//!
//! # Count groups
//!
//! A real KMS host counts distinct client machine IDs in one pool for all Windows requests
//! (client and server) and separately for Office. There are exactly three count groups:
//! [`COUNT_GROUP_WINDOWS`], [`COUNT_GROUP_OFFICE2010`] and [`COUNT_GROUP_OFFICE`]. Each caps at
//! twice the largest minimum count among its product groups (50, 10 and 10 with the built-in
//! data).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::{uuid, Uuid};

/// The compiled-in catalog data, in the format [`Catalog::extend_from_toml`] reads.
pub const BUILTIN_CATALOG_TOML: &str = include_str!("catalog.toml");

/// Count group of every Windows product group (client and server share the pool).
pub const COUNT_GROUP_WINDOWS: &str = "windows";
/// Count group of Office 2010.
pub const COUNT_GROUP_OFFICE2010: &str = "office2010";
/// Count group of Office 2013 and later.
pub const COUNT_GROUP_OFFICE: &str = "office";

/// Largest minimum count a group may declare: a host answers a larger `requiredClientCount`
/// with ERROR_INVALID_DATA (kms-protocol.md §5.3).
pub const MAX_MINIMUM_COUNT: u32 = 1000;

/// Words of the licensed-products policy that expand to several groups; no group may use them
/// as its name.
pub const RESERVED_POLICY_WORDS: [&str; 5] = [
    "all",
    "windows",
    "windows-client",
    "windows-server",
    "office",
];

/// A KMS application: the `applicationId` of a request. Each application gets its own ePID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Application {
    /// Windows, client and server (`55c92734-d682-4d71-983e-d6ec3f16059f`).
    #[serde(rename = "windows")]
    Windows,
    /// Office 2010 (`59a52881-a989-479d-af46-f275c6370663`).
    #[serde(rename = "office2010")]
    Office2010,
    /// Office 2013 and later (`0ff1ce15-a989-479d-af46-f275c6370663`).
    #[serde(rename = "office2013plus")]
    Office2013Plus,
}

impl Application {
    /// All three applications.
    pub const ALL: [Application; 3] = [
        Application::Windows,
        Application::Office2010,
        Application::Office2013Plus,
    ];

    /// The application GUID as sent in a request.
    pub fn id(self) -> Uuid {
        match self {
            Self::Windows => uuid!("55c92734-d682-4d71-983e-d6ec3f16059f"),
            Self::Office2010 => uuid!("59a52881-a989-479d-af46-f275c6370663"),
            Self::Office2013Plus => uuid!("0ff1ce15-a989-479d-af46-f275c6370663"),
        }
    }

    /// The application with this GUID, if it is one of the three.
    pub fn from_id(id: &Uuid) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == *id)
    }

    /// Stable label, as written in the data file (`windows`, `office2010`, `office2013plus`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Windows => "windows",
            Self::Office2010 => "office2010",
            Self::Office2013Plus => "office2013plus",
        }
    }

    /// Human-readable name.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Windows => "Windows",
            Self::Office2010 => "Office 2010",
            Self::Office2013Plus => "Office 2013+",
        }
    }

    /// The count group that pools this application's clients. Also the pool to use for a
    /// request whose counted ID is not in the catalog.
    pub fn count_group(self) -> &'static str {
        match self {
            Self::Windows => COUNT_GROUP_WINDOWS,
            Self::Office2010 => COUNT_GROUP_OFFICE2010,
            Self::Office2013Plus => COUNT_GROUP_OFFICE,
        }
    }
}

impl fmt::Display for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What kind of product a group is; drives the `windows-client` / `windows-server` / `office`
/// policy words and the usual minimum count (25 / 5 / 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    /// Windows client editions.
    Client,
    /// Windows Server editions (and Windows multi-session, which counts like a server).
    Server,
    /// Office, any version.
    Office,
}

impl ProductKind {
    /// Stable label (`client`, `server`, `office`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::Office => "office",
        }
    }

    fn fits(self, application: Application) -> bool {
        match self {
            Self::Client | Self::Server => application == Application::Windows,
            Self::Office => application != Application::Windows,
        }
    }
}

impl fmt::Display for ProductKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The host key (CSVLK) behind a group, as far as the ePID shows it. [`crate::epid::Epid`]
/// generates and checks host ePIDs against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Csvlk {
    /// The ePID group id (`GGGGG`), e.g. 206.
    pub epid_group_id: u32,
    /// Smallest key id of the CSVLK's range.
    pub key_id_min: u32,
    /// End of the key-id range, exclusive.
    pub key_id_max: u32,
    /// Oldest host OS build the key can be installed on.
    pub min_host_build: u32,
    /// Year the key was released; a host cannot have been activated with it earlier.
    pub release_year: u16,
}

/// One KMS counted ID: the unit an operator holds a host key for and licenses in config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductGroup {
    /// Stable slug used in config and metrics, e.g. `windows-10-11`.
    pub name: String,
    /// Human-readable name, e.g. "Windows 10/11 (Volume)".
    pub display: String,
    /// The `kmsCountedId` clients of this group send.
    pub kms_counted_id: Uuid,
    /// The application its clients send.
    pub application: Application,
    /// The N policy its clients send as `requiredClientCount`.
    pub minimum_count: u32,
    /// Default KMS protocol major version of its clients (4, 5 or 6).
    pub protocol: u16,
    /// Client, server or Office.
    pub kind: ProductKind,
    /// The count group (pool of machine IDs) its requests count in.
    pub count_group: String,
    /// The host key for ePID generation, if known.
    pub csvlk: Option<Csvlk>,
}

/// One activation ID (SKU) a client may send. The host only logs it; probes send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku {
    /// Edition name, e.g. "Windows 10 Enterprise".
    pub name: String,
    /// Other names the same SKU ID goes by (e.g. "Windows 11 Enterprise").
    pub aliases: Vec<String>,
    /// The activation (SKU) ID.
    pub sku_id: Uuid,
    /// Name of the [`ProductGroup`] it belongs to.
    pub group: String,
}

impl Sku {
    /// The name as a slug: lowercase ASCII letters and digits, other runs replaced by `-`
    /// ("Windows 10/11 Pro" → `windows-10-11-pro`). Accepted by [`Catalog::resolve_product`].
    pub fn slug(&self) -> String {
        slugify(&self.name)
    }

    /// The name and the aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// One count group with its derived cap, for status pages and the counting state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountGroupInfo {
    /// `windows`, `office2010` or `office`.
    pub name: String,
    /// Human-readable name.
    pub display: String,
    /// The application whose requests count here.
    pub application: Application,
    /// How many distinct machine IDs the pool keeps: 2 × `minimum`.
    pub cap: u32,
    /// Largest minimum count among the product groups of this pool (0 if it has none).
    pub minimum: u32,
}

/// What a client (or a probe) should send for a product found by [`Catalog::resolve_product`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductChoice {
    /// The SKU to send: the one asked for, or the group's default SKU (nil if it has none).
    pub sku_id: Uuid,
    /// The SKU's name, if there is a SKU.
    pub sku_name: Option<String>,
    /// The product group's name.
    pub group: String,
    /// The group's counted ID.
    pub kms_counted_id: Uuid,
    /// The application GUID to send.
    pub application_id: Uuid,
    /// The minimum count to send as `requiredClientCount`.
    pub minimum_count: u32,
    /// The protocol major version to use.
    pub protocol: u16,
    /// Display name: the SKU name if there is one, else the group's display name.
    pub display: String,
}

/// Why a catalog file or a licensed-products policy was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The text is not valid TOML or does not have the catalog's shape.
    #[error("catalog file does not parse: {message}")]
    Parse {
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A group name is not a slug (`[a-z0-9-]`, starting with a letter or digit).
    #[error("group name {name:?} is not a slug of lowercase letters, digits and '-'")]
    InvalidGroupName {
        /// The name as written.
        name: String,
    },
    /// A group uses one of the words the licensed-products policy expands.
    #[error("group name {name:?} is reserved by the licensed-products policy")]
    ReservedGroupName {
        /// The name as written.
        name: String,
    },
    /// The same group name appears twice in one file.
    #[error("group {name:?} is defined twice in the same file")]
    DuplicateGroup {
        /// The group name.
        name: String,
    },
    /// A counted ID is already held by a group of another name.
    #[error(
        "kms counted id {kms_counted_id} of group {new:?} already belongs to group {existing:?}"
    )]
    DuplicateCountedId {
        /// The counted ID.
        kms_counted_id: Uuid,
        /// The group that holds it.
        existing: String,
        /// The group that tried to take it.
        new: String,
    },
    /// A nil GUID where a real one is needed.
    #[error("{item} has a nil GUID")]
    NilId {
        /// What carries it (group or SKU name).
        item: String,
    },
    /// A group's minimum count is 0 or above [`MAX_MINIMUM_COUNT`].
    #[error("group {group:?}: minimum count {minimum} is outside 1..=1000")]
    InvalidMinimumCount {
        /// The group name.
        group: String,
        /// The value given.
        minimum: u32,
    },
    /// A group's protocol is not 4, 5 or 6.
    #[error("group {group:?}: protocol {protocol} is not 4, 5 or 6")]
    UnsupportedProtocol {
        /// The group name.
        group: String,
        /// The value given.
        protocol: u16,
    },
    /// A group names a count group that does not exist.
    #[error("group {group:?}: unknown count group {count_group:?} (windows, office2010, office)")]
    UnknownCountGroup {
        /// The group name.
        group: String,
        /// The count group given.
        count_group: String,
    },
    /// A group's count group pools another application.
    #[error("group {group:?}: count group {count_group:?} does not pool {application} requests")]
    CountGroupMismatch {
        /// The group name.
        group: String,
        /// The count group given.
        count_group: String,
        /// The group's application.
        application: Application,
    },
    /// A group's kind does not fit its application (office kind with Windows, or the reverse).
    #[error("group {group:?}: kind {kind} does not fit application {application}")]
    KindMismatch {
        /// The group name.
        group: String,
        /// The kind given.
        kind: ProductKind,
        /// The application given.
        application: Application,
    },
    /// A CSVLK's key-id range is empty or exceeds nine digits.
    #[error("group {group:?}: CSVLK key id range {min}..{max} is empty or exceeds 999999999")]
    InvalidKeyRange {
        /// The group name.
        group: String,
        /// `key_id_min`.
        min: u32,
        /// `key_id_max` (exclusive).
        max: u32,
    },
    /// A CSVLK's ePID group id exceeds five digits.
    #[error("group {group:?}: CSVLK ePID group id {epid_group_id} exceeds 99999")]
    InvalidEpidGroupId {
        /// The group name.
        group: String,
        /// The value given.
        epid_group_id: u32,
    },
    /// A SKU name or alias is empty.
    #[error("SKU {sku_id} has an empty name or alias")]
    EmptySkuName {
        /// The SKU ID.
        sku_id: Uuid,
    },
    /// The same SKU ID appears twice in one file.
    #[error("SKU {sku_id} is defined twice in the same file")]
    DuplicateSku {
        /// The SKU ID.
        sku_id: Uuid,
    },
    /// A SKU name or alias (compared as a slug) is already used by another SKU.
    #[error("SKU name {name:?} of {new} is already used by SKU {existing}")]
    DuplicateSkuName {
        /// The name.
        name: String,
        /// The SKU that has it.
        existing: Uuid,
        /// The SKU that tried to take it.
        new: Uuid,
    },
    /// A SKU references a group that neither the file nor the catalog defines.
    #[error("SKU {sku:?} references unknown group {group:?}")]
    UnknownGroup {
        /// The SKU name.
        sku: String,
        /// The group name given.
        group: String,
    },
    /// A licensed-products policy names no group.
    #[error("licensed-products policy is empty")]
    EmptyLicensedSpec,
    /// A licensed-products policy names something that is neither a group nor a policy word.
    #[error("licensed-products policy names unknown product group {name:?}")]
    UnknownLicensedName {
        /// The name as written.
        name: String,
    },
}

/// The product catalog: groups and SKUs with their lookup indexes.
///
/// Build it with [`Catalog::builtin`], then apply an operator's file with
/// [`Catalog::extend_from_toml`]. Lookups by counted ID and SKU ID are hash lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    groups: Vec<ProductGroup>,
    skus: Vec<Sku>,
    group_by_name: HashMap<String, usize>,
    group_by_counted_id: HashMap<Uuid, usize>,
    sku_by_id: HashMap<Uuid, usize>,
    /// Slug of every SKU name and alias → SKU index.
    sku_by_slug: HashMap<String, usize>,
}

impl Catalog {
    /// An empty catalog (no groups, no SKUs); mostly for tests and fully custom data.
    pub fn empty() -> Self {
        Self {
            groups: Vec::new(),
            skus: Vec::new(),
            group_by_name: HashMap::new(),
            group_by_counted_id: HashMap::new(),
            sku_by_id: HashMap::new(),
            sku_by_slug: HashMap::new(),
        }
    }

    /// The compiled-in catalog ([`BUILTIN_CATALOG_TOML`]).
    ///
    /// # Panics
    ///
    /// Never in practice: the built-in data is checked by this module's tests.
    pub fn builtin() -> Self {
        let mut catalog = Self::empty();
        if let Err(e) = catalog.extend_from_toml(BUILTIN_CATALOG_TOML) {
            panic!("built-in product catalog is invalid: {e}");
        }
        catalog
    }

    /// Adds the groups and SKUs of a catalog file, replacing groups with the same name and SKUs
    /// with the same ID. On error the catalog is left unchanged.
    pub fn extend_from_toml(&mut self, text: &str) -> Result<(), CatalogError> {
        let file: FileData = toml::from_str(text).map_err(|e| CatalogError::Parse {
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut next = self.clone();
        next.apply(file)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, file: FileData) -> Result<(), CatalogError> {
        let mut seen_groups = Vec::new();
        for g in file.group {
            if seen_groups.contains(&g.name) {
                return Err(CatalogError::DuplicateGroup { name: g.name });
            }
            seen_groups.push(g.name.clone());
            let group = g.validate()?;
            self.upsert_group(group)?;
        }
        let mut seen_skus = Vec::new();
        for s in file.sku {
            if seen_skus.contains(&s.id) {
                return Err(CatalogError::DuplicateSku { sku_id: s.id });
            }
            seen_skus.push(s.id);
            let sku = s.validate()?;
            self.upsert_sku(sku)?;
        }
        Ok(())
    }

    fn upsert_group(&mut self, group: ProductGroup) -> Result<(), CatalogError> {
        let existing_idx = self.group_by_name.get(&group.name).copied();
        if let Some(&holder) = self.group_by_counted_id.get(&group.kms_counted_id) {
            if Some(holder) != existing_idx {
                return Err(CatalogError::DuplicateCountedId {
                    kms_counted_id: group.kms_counted_id,
                    existing: self.groups[holder].name.clone(),
                    new: group.name,
                });
            }
        }
        match existing_idx {
            Some(idx) => {
                self.group_by_counted_id
                    .remove(&self.groups[idx].kms_counted_id);
                self.group_by_counted_id.insert(group.kms_counted_id, idx);
                self.groups[idx] = group;
            }
            None => {
                let idx = self.groups.len();
                self.group_by_name.insert(group.name.clone(), idx);
                self.group_by_counted_id.insert(group.kms_counted_id, idx);
                self.groups.push(group);
            }
        }
        Ok(())
    }

    fn upsert_sku(&mut self, sku: Sku) -> Result<(), CatalogError> {
        if !self.group_by_name.contains_key(&sku.group) {
            return Err(CatalogError::UnknownGroup {
                sku: sku.name,
                group: sku.group,
            });
        }
        let existing_idx = self.sku_by_id.get(&sku.sku_id).copied();
        let mut slugs = Vec::new();
        for name in sku.names() {
            let slug = slugify(name);
            if slug.is_empty() {
                return Err(CatalogError::EmptySkuName { sku_id: sku.sku_id });
            }
            if let Some(&holder) = self.sku_by_slug.get(&slug) {
                if Some(holder) != existing_idx {
                    return Err(CatalogError::DuplicateSkuName {
                        name: name.to_owned(),
                        existing: self.skus[holder].sku_id,
                        new: sku.sku_id,
                    });
                }
            }
            slugs.push(slug);
        }
        let idx = match existing_idx {
            Some(idx) => {
                let old_slugs: Vec<String> = self.skus[idx].names().map(slugify).collect();
                for s in old_slugs {
                    self.sku_by_slug.remove(&s);
                }
                self.skus[idx] = sku;
                idx
            }
            None => {
                let idx = self.skus.len();
                self.sku_by_id.insert(sku.sku_id, idx);
                self.skus.push(sku);
                idx
            }
        };
        for s in slugs {
            self.sku_by_slug.insert(s, idx);
        }
        Ok(())
    }

    /// All product groups, in file order (built-in first, then extensions).
    pub fn groups(&self) -> impl Iterator<Item = &ProductGroup> {
        self.groups.iter()
    }

    /// All SKUs, in file order.
    pub fn skus(&self) -> impl Iterator<Item = &Sku> {
        self.skus.iter()
    }

    /// The SKUs of one group, in file order (the first is the group's default).
    pub fn skus_of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Sku> + 'a {
        self.skus.iter().filter(move |s| s.group == group)
    }

    /// The group with this counted ID: the host's accept/refuse and pool decision.
    pub fn group_by_counted_id(&self, id: &Uuid) -> Option<&ProductGroup> {
        self.group_by_counted_id.get(id).map(|&i| &self.groups[i])
    }

    /// The group with this name (exact, names are lowercase slugs).
    pub fn group(&self, name: &str) -> Option<&ProductGroup> {
        self.group_by_name.get(name).map(|&i| &self.groups[i])
    }

    /// The SKU with this activation ID.
    pub fn sku(&self, id: &Uuid) -> Option<&Sku> {
        self.sku_by_id.get(id).map(|&i| &self.skus[i])
    }

    /// The SKU with this name or alias, compared case-insensitively (and ignoring punctuation:
    /// names are compared by their slug).
    pub fn sku_by_name(&self, name: &str) -> Option<&Sku> {
        self.sku_by_slug.get(&slugify(name)).map(|&i| &self.skus[i])
    }

    /// Finds what to send for a product named by an operator: a GUID (SKU ID or counted ID), a
    /// group name, or a SKU name, alias or slug (case-insensitive), tried in that order.
    pub fn resolve_product(&self, query: &str) -> Option<ProductChoice> {
        let q = query.trim();
        if q.is_empty() {
            return None;
        }
        if let Ok(id) = Uuid::parse_str(q.trim_start_matches('{').trim_end_matches('}')) {
            if let Some(sku) = self.sku(&id) {
                return self.choice_for_sku(sku);
            }
            return self
                .group_by_counted_id(&id)
                .map(|g| self.choice_for_group(g));
        }
        if let Some(g) = self.group(&q.to_ascii_lowercase()) {
            return Some(self.choice_for_group(g));
        }
        self.sku_by_name(q).and_then(|s| self.choice_for_sku(s))
    }

    fn choice_for_sku(&self, sku: &Sku) -> Option<ProductChoice> {
        let g = self.group(&sku.group)?;
        Some(ProductChoice {
            sku_id: sku.sku_id,
            sku_name: Some(sku.name.clone()),
            group: g.name.clone(),
            kms_counted_id: g.kms_counted_id,
            application_id: g.application.id(),
            minimum_count: g.minimum_count,
            protocol: g.protocol,
            display: sku.name.clone(),
        })
    }

    fn choice_for_group(&self, g: &ProductGroup) -> ProductChoice {
        let sku = self.skus_of(&g.name).next();
        ProductChoice {
            sku_id: sku.map_or(Uuid::nil(), |s| s.sku_id),
            sku_name: sku.map(|s| s.name.clone()),
            group: g.name.clone(),
            kms_counted_id: g.kms_counted_id,
            application_id: g.application.id(),
            minimum_count: g.minimum_count,
            protocol: g.protocol,
            display: sku.map_or_else(|| g.display.clone(), |s| s.name.clone()),
        }
    }

    /// The three count groups with their caps, in a fixed order (windows, office2010, office).
    pub fn count_groups(&self) -> Vec<CountGroupInfo> {
        Application::ALL
            .into_iter()
            .map(|app| {
                let name = app.count_group();
                let minimum = self.count_group_minimum(name);
                CountGroupInfo {
                    name: name.to_owned(),
                    display: match app {
                        Application::Windows => "Windows (client and server)",
                        Application::Office2010 => "Office 2010",
                        Application::Office2013Plus => "Office 2013 and later",
                    }
                    .to_owned(),
                    application: app,
                    cap: minimum.saturating_mul(2),
                    minimum,
                }
            })
            .collect()
    }

    /// How many distinct machine IDs a count group keeps: twice the largest minimum count among
    /// its groups (50 for `windows`, 10 for `office2010` and `office`). 0 for an unknown name.
    pub fn count_group_cap(&self, name: &str) -> u32 {
        self.count_group_minimum(name).saturating_mul(2)
    }

    fn count_group_minimum(&self, name: &str) -> u32 {
        self.groups
            .iter()
            .filter(|g| g.count_group == name)
            .map(|g| g.minimum_count)
            .max()
            .unwrap_or(0)
    }

    /// Expands the operator's licensed-products policy into group names (catalog order,
    /// no duplicates).
    ///
    /// `all` means every group; otherwise a comma-separated list of group names and the words
    /// `windows` (every Windows group), `windows-client`, `windows-server` and `office` (every
    /// Office group). Case and surrounding spaces are ignored; empty items are skipped.
    pub fn parse_licensed(&self, spec: &str) -> Result<Vec<String>, CatalogError> {
        let mut wanted = vec![false; self.groups.len()];
        let mut any = false;
        for item in spec.split(',') {
            let item = item.trim().to_ascii_lowercase();
            if item.is_empty() {
                continue;
            }
            any = true;
            let matches: fn(&ProductGroup) -> bool = match item.as_str() {
                "all" => |_| true,
                "windows" => |g| g.application == Application::Windows,
                "windows-client" => |g| g.kind == ProductKind::Client,
                "windows-server" => |g| g.kind == ProductKind::Server,
                "office" => |g| g.kind == ProductKind::Office,
                name => match self.group_by_name.get(name) {
                    Some(&idx) => {
                        wanted[idx] = true;
                        continue;
                    }
                    None => return Err(CatalogError::UnknownLicensedName { name: item }),
                },
            };
            for (w, g) in wanted.iter_mut().zip(&self.groups) {
                *w |= matches(g);
            }
        }
        if !any {
            return Err(CatalogError::EmptyLicensedSpec);
        }
        Ok(self
            .groups
            .iter()
            .zip(wanted)
            .filter(|(_, w)| *w)
            .map(|(g, _)| g.name.clone())
            .collect())
    }

    /// Among the `licensed` groups of `application` that have a CSVLK, the one whose key is the
    /// newest (latest release year, then highest minimum host build, then catalog order): the
    /// key a real host serving all of them would hold, so the one to build that application's
    /// ePID from.
    pub fn newest_csvlk_group<S: AsRef<str>>(
        &self,
        application: Application,
        licensed: &[S],
    ) -> Option<&ProductGroup> {
        licensed
            .iter()
            .filter_map(|name| self.group_by_name.get(name.as_ref()).copied())
            .filter_map(|idx| {
                let g = &self.groups[idx];
                let c = g.csvlk?;
                (g.application == application).then_some((
                    (c.release_year, c.min_host_build, std::cmp::Reverse(idx)),
                    g,
                ))
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, g)| g)
    }
}

impl Default for Catalog {
    /// The built-in catalog.
    fn default() -> Self {
        Self::builtin()
    }
}

/// Lowercase ASCII alphanumerics, every other run of characters collapsed to one `-`, no `-`
/// at either end.
fn slugify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_dash = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    out
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The file's shape, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileData {
    #[serde(default)]
    group: Vec<GroupEntry>,
    #[serde(default)]
    sku: Vec<SkuEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    name: String,
    display: String,
    kms_counted_id: Uuid,
    application: Application,
    kind: ProductKind,
    minimum_count: u32,
    protocol: u16,
    count_group: Option<String>,
    csvlk: Option<Csvlk>,
}

impl GroupEntry {
    fn validate(self) -> Result<ProductGroup, CatalogError> {
        let name = self.name;
        if !is_slug(&name) {
            return Err(CatalogError::InvalidGroupName { name });
        }
        if RESERVED_POLICY_WORDS.contains(&name.as_str()) {
            return Err(CatalogError::ReservedGroupName { name });
        }
        if self.kms_counted_id.is_nil() {
            return Err(CatalogError::NilId {
                item: format!("group {name:?}"),
            });
        }
        if !(1..=MAX_MINIMUM_COUNT).contains(&self.minimum_count) {
            return Err(CatalogError::InvalidMinimumCount {
                group: name,
                minimum: self.minimum_count,
            });
        }
        if !(4..=6).contains(&self.protocol) {
            return Err(CatalogError::UnsupportedProtocol {
                group: name,
                protocol: self.protocol,
            });
        }
        if !self.kind.fits(self.application) {
            return Err(CatalogError::KindMismatch {
                group: name,
                kind: self.kind,
                application: self.application,
            });
        }
        let count_group = match self.count_group {
            None => self.application.count_group().to_owned(),
            Some(cg) => {
                let Some(owner) = Application::ALL.into_iter().find(|a| a.count_group() == cg)
                else {
                    return Err(CatalogError::UnknownCountGroup {
                        group: name,
                        count_group: cg,
                    });
                };
                if owner != self.application {
                    return Err(CatalogError::CountGroupMismatch {
                        group: name,
                        count_group: cg,
                        application: self.application,
                    });
                }
                cg
            }
        };
        if let Some(c) = &self.csvlk {
            if c.key_id_min >= c.key_id_max || c.key_id_max > 1_000_000_000 {
                return Err(CatalogError::InvalidKeyRange {
                    group: name,
                    min: c.key_id_min,
                    max: c.key_id_max,
                });
            }
            if c.epid_group_id > 99_999 {
                return Err(CatalogError::InvalidEpidGroupId {
                    group: name,
                    epid_group_id: c.epid_group_id,
                });
            }
        }
        Ok(ProductGroup {
            name,
            display: self.display,
            kms_counted_id: self.kms_counted_id,
            application: self.application,
            minimum_count: self.minimum_count,
            protocol: self.protocol,
            kind: self.kind,
            count_group,
            csvlk: self.csvlk,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkuEntry {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    id: Uuid,
    group: String,
}

impl SkuEntry {
    fn validate(self) -> Result<Sku, CatalogError> {
        if self.id.is_nil() {
            return Err(CatalogError::NilId {
                item: format!("SKU {:?}", self.name),
            });
        }
        Ok(Sku {
            name: self.name.trim().to_owned(),
            aliases: self.aliases.iter().map(|a| a.trim().to_owned()).collect(),
            sku_id: self.id,
            group: self.group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kms-protocol.md §5.2: counted ID, minimum count, protocol.
    const TABLE_5_2: &[(&str, u32, u16)] = &[
        ("4b83307d-7788-50ff-8d1f-1861915bdb9d", 5, 6),
        ("b74263e4-0f92-46c6-bcf8-c11d5efe2959", 5, 6),
        ("8449b1fb-f0ea-497a-99ab-66ca96e9a0f5", 5, 6),
        ("6e9fc069-257d-4bc4-b4a7-750514d32743", 5, 6),
        ("8456efd3-0c04-4089-8740-5b7238535a65", 5, 6),
        ("8665cb71-468c-4aa3-a337-cb9bc9d5eaac", 5, 5),
        ("0fc6ccaf-ff0e-4fae-9d08-4370785bf7ed", 5, 4),
        ("ca87f5b6-cd46-40c0-b06d-8ecd57a4373f", 5, 4),
        ("b2ca2689-a9a8-42d7-938d-cf8e9f201958", 5, 4),
        ("33e156e4-b76f-4a52-9f91-f641dd95ac48", 5, 4),
        ("8fe53387-3087-4447-8985-f75132215ac9", 5, 4),
        ("8a21fdf3-cbc5-44eb-83f3-fe284e6680a7", 5, 4),
        ("6d5f5270-31ac-433e-b90a-39892923c657", 5, 6),
        ("cbdcb1ba-e093-4c81-a463-10775291fdf9", 5, 6),
        ("58e2134f-8e11-4d17-9cb2-91069c151148", 25, 6),
        ("969fe3c0-a3ec-491a-9f25-423605deb365", 25, 6),
        ("11b15659-e603-4cf1-9c1f-f0ec01b81888", 25, 6),
        ("7ba0bf23-d0f5-4072-91d9-d55af5a481b6", 25, 6),
        ("e1c51358-fe3e-4203-a4a2-3b6b20c9734e", 25, 6),
        ("d27cd636-1962-44e9-8b4f-27b6c23efb85", 25, 6),
        ("cb8fc780-2c05-495a-9710-85afffc904d7", 25, 6),
        ("6d646890-3606-461a-86ab-598bb84ace82", 25, 6),
        ("3c40b358-5948-45af-923b-53d21fcc7e79", 25, 5),
        ("bbb97b3b-8ca4-4a28-9717-89fabd42c4ac", 25, 5),
        ("7fde5219-fbfa-484a-82c9-34d1ad53e856", 25, 4),
        ("212a64dc-43b1-4d3d-a30c-2fc69d2095c6", 25, 4),
        ("e85af946-2e25-47b7-83e1-bebcebeac611", 5, 4),
        ("e6a6f1bf-9d40-40c3-aa9f-c77ba21578c0", 5, 5),
        ("aa4c7968-b9da-4680-92b6-acb25e2f866c", 5, 5),
        ("85b5f61b-320b-4be3-814a-b76b2bfafc82", 5, 6),
        ("617d9eb1-ef36-4f82-86e0-a65ae07b96c6", 5, 6),
        ("86d50b16-4808-41af-b83b-b338274318b2", 5, 6),
        ("1b4db7eb-4057-5ddf-91e0-36dec72071f5", 5, 6),
    ];

    fn id(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    const NEW_PRODUCT: &str = r#"
        [[group]]
        name = "windows-next"
        display = "Windows Next (Volume)"
        kms_counted_id = "12345678-1234-4234-8234-123456789abc"
        application = "windows"
        kind = "client"
        minimum_count = 25
        protocol = 6
        csvlk = { epid_group_id = 5000, key_id_min = 1000, key_id_max = 2000, min_host_build = 26100, release_year = 2026 }

        [[sku]]
        name = "Windows Next Enterprise"
        id = "87654321-4321-4321-8321-cba987654321"
        group = "windows-next"

        [[sku]]
        name = "Windows 10 Pro China Edition"
        id = "11111111-2222-4333-8444-555555555555"
        group = "windows-10-11"
    "#;

    fn extend_err(text: &str) -> CatalogError {
        let mut c = Catalog::builtin();
        let before = c.groups().count();
        let err = c.extend_from_toml(text).unwrap_err();
        assert_eq!(
            c.groups().count(),
            before,
            "failed extension must not change"
        );
        err
    }

    fn group_toml(overrides: &[(&str, &str)]) -> String {
        let mut fields = vec![
            ("name", "\"test-product\""),
            ("display", "\"Test\""),
            ("kms_counted_id", "\"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee\""),
            ("application", "\"windows\""),
            ("kind", "\"server\""),
            ("minimum_count", "5"),
            ("protocol", "6"),
        ];
        for (k, v) in overrides {
            match fields.iter_mut().find(|(fk, _)| fk == k) {
                Some(f) => f.1 = v,
                None => fields.push((k, v)),
            }
        }
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("[[group]]\n{}\n", body.join("\n"))
    }

    #[test]
    fn builtin_parses_and_covers_table_5_2() {
        let c = Catalog::builtin();
        assert_eq!(c.groups().count(), TABLE_5_2.len());
        for &(cid, min, proto) in TABLE_5_2 {
            let g = c
                .group_by_counted_id(&id(cid))
                .unwrap_or_else(|| panic!("{cid} missing"));
            assert_eq!(g.minimum_count, min, "{}", g.name);
            assert_eq!(g.protocol, proto, "{}", g.name);
            let expected_min = match g.kind {
                ProductKind::Client => 25,
                ProductKind::Server | ProductKind::Office => 5,
            };
            assert_eq!(g.minimum_count, expected_min, "{}", g.name);
            assert_eq!(g.count_group, g.application.count_group());
            assert_eq!(c.group(&g.name), Some(g));
        }
        for name in [
            "windows-10-11",
            "windows-7",
            "server-2019",
            "server-2025",
            "office-2010",
            "office-2016",
            "office-ltsc-2024",
        ] {
            assert!(c.group(name).is_some(), "{name}");
        }
        assert_eq!(
            c.group("office-2010").unwrap().application,
            Application::Office2010
        );
        assert_eq!(
            c.group("office-2016").unwrap().application,
            Application::Office2013Plus
        );
    }

    #[test]
    fn builtin_csvlks_are_consistent() {
        let c = Catalog::builtin();
        for g in c.groups() {
            if g.name == "office-2013-preview" {
                assert!(g.csvlk.is_none());
                continue;
            }
            let k = g.csvlk.unwrap_or_else(|| panic!("{} has no CSVLK", g.name));
            assert!(k.key_id_min < k.key_id_max && k.key_id_max <= 1_000_000_000);
            assert!((2006..=2030).contains(&k.release_year), "{}", g.name);
            assert!(k.min_host_build >= 6002, "{}", g.name);
        }
        let w7 = c.group("windows-7").unwrap().csvlk.unwrap();
        assert_eq!(
            (w7.epid_group_id, w7.key_id_min, w7.key_id_max),
            (172, 37_000_000, 49_750_000)
        );
        assert_eq!(
            c.group("server-2022").unwrap().csvlk.unwrap().epid_group_id,
            4573
        );
        assert_eq!(
            c.group("server-2025").unwrap().csvlk.unwrap().epid_group_id,
            4918
        );
        assert_eq!(
            c.group("office-2010").unwrap().csvlk.unwrap().epid_group_id,
            96
        );
    }

    #[test]
    fn every_group_but_one_has_a_default_sku() {
        let c = Catalog::builtin();
        let without: Vec<&str> = c
            .groups()
            .filter(|g| c.skus_of(&g.name).next().is_none())
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(without, ["windows-10-unknown"]);
        assert!(c.skus().all(|s| c.group(&s.group).is_some()));
        assert!(c.skus().count() >= 100);
    }

    #[test]
    fn count_groups_and_caps() {
        let c = Catalog::builtin();
        assert_eq!(c.count_group_cap("windows"), 50);
        assert_eq!(c.count_group_cap("office2010"), 10);
        assert_eq!(c.count_group_cap("office"), 10);
        assert_eq!(c.count_group_cap("nope"), 0);
        let infos = c.count_groups();
        let summary: Vec<(&str, Application, u32, u32)> = infos
            .iter()
            .map(|i| (i.name.as_str(), i.application, i.minimum, i.cap))
            .collect();
        assert_eq!(
            summary,
            [
                ("windows", Application::Windows, 25, 50),
                ("office2010", Application::Office2010, 5, 10),
                ("office", Application::Office2013Plus, 5, 10),
            ]
        );
        // Client and server share the Windows pool.
        assert_eq!(c.group("server-2019").unwrap().count_group, "windows");
        assert_eq!(c.group("windows-7").unwrap().count_group, "windows");
    }

    #[test]
    fn application_ids_round_trip() {
        for app in Application::ALL {
            assert_eq!(Application::from_id(&app.id()), Some(app));
        }
        assert_eq!(
            Application::Windows.id(),
            id("55c92734-d682-4d71-983e-d6ec3f16059f")
        );
        assert_eq!(
            Application::Office2010.id(),
            id("59a52881-a989-479d-af46-f275c6370663")
        );
        assert_eq!(
            Application::Office2013Plus.id(),
            id("0ff1ce15-a989-479d-af46-f275c6370663")
        );
        assert_eq!(Application::from_id(&Uuid::nil()), None);
    }

    #[test]
    fn windows_10_enterprise_resolves() {
        let c = Catalog::builtin();
        let win10 = id("58e2134f-8e11-4d17-9cb2-91069c151148");
        let app = id("55c92734-d682-4d71-983e-d6ec3f16059f");
        let sku = id("73111121-5638-40f6-bc11-f1d7b0d64300");
        for q in [
            "Windows 10 Enterprise",
            "windows 10 enterprise",
            "WINDOWS 11 ENTERPRISE",
            "windows-10-enterprise",
            "Windows 10/11 Enterprise",
            "73111121-5638-40f6-bc11-f1d7b0d64300",
            "{73111121-5638-40F6-BC11-F1D7B0D64300}",
            "windows-10-11",
            "58e2134f-8e11-4d17-9cb2-91069c151148",
        ] {
            let p = c.resolve_product(q).unwrap_or_else(|| panic!("{q}"));
            assert_eq!(p.kms_counted_id, win10, "{q}");
            assert_eq!(p.application_id, app, "{q}");
            assert_eq!(p.sku_id, sku, "{q}: default SKU of the group is Enterprise");
            assert_eq!(p.minimum_count, 25);
            assert_eq!(p.protocol, 6);
            assert_eq!(p.group, "windows-10-11");
            assert_eq!(p.display, "Windows 10 Enterprise");
        }
        assert_eq!(c.sku(&sku).unwrap().name, "Windows 10 Enterprise");
        assert_eq!(c.sku_by_name("windows 11 enterprise").unwrap().sku_id, sku);
        assert!(c.resolve_product("Windows 12 Ultimate").is_none());
        assert!(c.resolve_product("").is_none());
        assert!(c
            .resolve_product("00000000-0000-4000-8000-000000000001")
            .is_none());
    }

    #[test]
    fn other_products_resolve() {
        let c = Catalog::builtin();
        let w7 = c.resolve_product("Windows 7 Enterprise").unwrap();
        assert_eq!(w7.sku_id, id("ae2ee509-1b34-41c0-acb7-6d4650168915"));
        assert_eq!(
            w7.kms_counted_id,
            id("7fde5219-fbfa-484a-82c9-34d1ad53e856")
        );
        assert_eq!(w7.protocol, 4);
        let o10 = c.resolve_product("office-2010").unwrap();
        assert_eq!(o10.application_id, Application::Office2010.id());
        assert_eq!(o10.display, "Office Professional Plus 2010");
        let s19 = c.resolve_product("server-2019").unwrap();
        assert_eq!(s19.display, "Windows Server 2019 Standard");
        assert_eq!(s19.minimum_count, 5);
        let unknown = c.resolve_product("windows-10-unknown").unwrap();
        assert!(unknown.sku_id.is_nil());
        assert_eq!(unknown.sku_name, None);
    }

    #[test]
    fn extension_adds_a_new_product() {
        let mut c = Catalog::builtin();
        c.extend_from_toml(NEW_PRODUCT).unwrap();
        let g = c
            .group_by_counted_id(&id("12345678-1234-4234-8234-123456789abc"))
            .unwrap();
        assert_eq!(g.name, "windows-next");
        assert_eq!(g.count_group, "windows");
        assert_eq!(g.csvlk.unwrap().epid_group_id, 5000);
        let p = c.resolve_product("Windows Next Enterprise").unwrap();
        assert_eq!(p.kms_counted_id, g.kms_counted_id);
        assert_eq!(
            c.sku_by_name("windows 10 pro china edition").unwrap().group,
            "windows-10-11"
        );
        // The Windows 10/11 default SKU is unchanged by appending a SKU.
        assert_eq!(
            c.resolve_product("windows-10-11").unwrap().display,
            "Windows 10 Enterprise"
        );
        assert_eq!(c.count_group_cap("windows"), 50);
        assert!(c
            .parse_licensed("windows-client")
            .unwrap()
            .contains(&"windows-next".to_owned()));
    }

    #[test]
    fn extension_replaces_groups_and_skus() {
        let mut c = Catalog::builtin();
        let n = c.groups().count();
        let text = group_toml(&[
            ("name", "\"server-2019\""),
            ("display", "\"Server 2019 (custom)\""),
            ("kms_counted_id", "\"8449b1fb-f0ea-497a-99ab-66ca96e9a0f5\""),
            ("minimum_count", "10"),
        ]) + r#"
            [[sku]]
            name = "Windows Server 2019 Standard Edition"
            id = "de32eafd-aaee-4662-9444-c1befb41bde2"
            group = "server-2019"
        "#;
        c.extend_from_toml(&text).unwrap();
        assert_eq!(c.groups().count(), n);
        let g = c.group("server-2019").unwrap();
        assert_eq!(g.display, "Server 2019 (custom)");
        assert_eq!(g.minimum_count, 10);
        assert!(g.csvlk.is_none());
        assert_eq!(c.count_group_cap("windows"), 50);
        let sku = c.sku(&id("de32eafd-aaee-4662-9444-c1befb41bde2")).unwrap();
        assert_eq!(sku.name, "Windows Server 2019 Standard Edition");
        assert!(c.sku_by_name("Windows Server 2019 Standard").is_none());
        // Raising a minimum raises the pool's cap.
        let text = group_toml(&[
            ("name", "\"server-2019\""),
            ("kms_counted_id", "\"8449b1fb-f0ea-497a-99ab-66ca96e9a0f5\""),
            ("minimum_count", "40"),
        ]);
        c.extend_from_toml(&text).unwrap();
        assert_eq!(c.count_group_cap("windows"), 80);
        // A group may move to a fresh counted id; the old one is released.
        let text = group_toml(&[("name", "\"server-2019\"")]);
        c.extend_from_toml(&text).unwrap();
        assert!(c
            .group_by_counted_id(&id("8449b1fb-f0ea-497a-99ab-66ca96e9a0f5"))
            .is_none());
        assert_eq!(
            c.group_by_counted_id(&id("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"))
                .unwrap()
                .name,
            "server-2019"
        );
    }

    #[test]
    fn extension_rejects_bad_files() {
        assert!(matches!(
            extend_err("[[group]]\nname = 3\n"),
            CatalogError::Parse { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("colour", "\"blue\"")])),
            CatalogError::Parse { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("application", "\"office2030\"")])),
            CatalogError::Parse { .. }
        ));
        assert_eq!(
            extend_err(&group_toml(&[(
                "kms_counted_id",
                "\"58e2134f-8e11-4d17-9cb2-91069c151148\""
            )])),
            CatalogError::DuplicateCountedId {
                kms_counted_id: id("58e2134f-8e11-4d17-9cb2-91069c151148"),
                existing: "windows-10-11".into(),
                new: "test-product".into(),
            }
        );
        assert_eq!(
            extend_err(&group_toml(&[("minimum_count", "0")])),
            CatalogError::InvalidMinimumCount {
                group: "test-product".into(),
                minimum: 0
            }
        );
        assert!(matches!(
            extend_err(&group_toml(&[("minimum_count", "1001")])),
            CatalogError::InvalidMinimumCount { minimum: 1001, .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("protocol", "7")])),
            CatalogError::UnsupportedProtocol { protocol: 7, .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("count_group", "\"servers\"")])),
            CatalogError::UnknownCountGroup { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("count_group", "\"office\"")])),
            CatalogError::CountGroupMismatch {
                application: Application::Windows,
                ..
            }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("kind", "\"office\"")])),
            CatalogError::KindMismatch { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[
                ("application", "\"office2013plus\""),
                ("kind", "\"client\"")
            ])),
            CatalogError::KindMismatch { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("name", "\"Server 2030\"")])),
            CatalogError::InvalidGroupName { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[("name", "\"windows-server\"")])),
            CatalogError::ReservedGroupName { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[(
                "kms_counted_id",
                "\"00000000-0000-0000-0000-000000000000\""
            )])),
            CatalogError::NilId { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[(
                "csvlk",
                "{ epid_group_id = 206, key_id_min = 5, key_id_max = 5, min_host_build = 9600, release_year = 2020 }"
            )])),
            CatalogError::InvalidKeyRange { min: 5, max: 5, .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[(
                "csvlk",
                "{ epid_group_id = 206, key_id_min = 5, key_id_max = 1000000001, min_host_build = 9600, release_year = 2020 }"
            )])),
            CatalogError::InvalidKeyRange { .. }
        ));
        assert!(matches!(
            extend_err(&group_toml(&[(
                "csvlk",
                "{ epid_group_id = 100000, key_id_min = 5, key_id_max = 6, min_host_build = 9600, release_year = 2020 }"
            )])),
            CatalogError::InvalidEpidGroupId { .. }
        ));
        let twice = group_toml(&[]) + &group_toml(&[]);
        assert!(matches!(
            extend_err(&twice),
            CatalogError::DuplicateGroup { .. }
        ));
        assert_eq!(
            extend_err(
                r#"
                [[sku]]
                name = "Orphan"
                id = "12345678-0000-4000-8000-000000000000"
                group = "no-such-group"
                "#
            ),
            CatalogError::UnknownGroup {
                sku: "Orphan".into(),
                group: "no-such-group".into()
            }
        );
        assert!(matches!(
            extend_err(
                r#"
                [[sku]]
                name = "windows-10 ENTERPRISE"
                id = "12345678-0000-4000-8000-000000000000"
                group = "windows-10-11"
                "#
            ),
            CatalogError::DuplicateSkuName { .. }
        ));
        assert!(matches!(
            extend_err(
                r#"
                [[sku]]
                name = "--"
                id = "12345678-0000-4000-8000-000000000000"
                group = "windows-10-11"
                "#
            ),
            CatalogError::EmptySkuName { .. }
        ));
        assert!(matches!(
            extend_err(
                r#"
                [[sku]]
                name = "A"
                id = "12345678-0000-4000-8000-000000000000"
                group = "windows-10-11"
                [[sku]]
                name = "B"
                id = "12345678-0000-4000-8000-000000000000"
                group = "windows-10-11"
                "#
            ),
            CatalogError::DuplicateSku { .. }
        ));
        // A good group followed by a bad SKU leaves nothing behind.
        let mut c = Catalog::builtin();
        let text = group_toml(&[]) + "[[sku]]\nname = \"X\"\nid = \"12345678-0000-4000-8000-000000000000\"\ngroup = \"nope\"\n";
        assert!(c.extend_from_toml(&text).is_err());
        assert!(c.group("test-product").is_none());
    }

    #[test]
    fn parse_licensed_expands_words() {
        let c = Catalog::builtin();
        let all = c.parse_licensed("all").unwrap();
        assert_eq!(all.len(), c.groups().count());
        assert_eq!(c.parse_licensed(" ALL , windows-7").unwrap(), all);

        let windows = c.parse_licensed("windows").unwrap();
        let client = c.parse_licensed("windows-client").unwrap();
        let server = c.parse_licensed("windows-server").unwrap();
        let office = c.parse_licensed("office").unwrap();
        assert_eq!(windows.len(), client.len() + server.len());
        assert_eq!(windows.len() + office.len(), all.len());
        assert!(client.contains(&"windows-10-11".to_owned()));
        assert!(!client.contains(&"server-2019".to_owned()));
        assert!(server.contains(&"server-2025".to_owned()));
        assert_eq!(
            office,
            [
                "office-2010",
                "office-2013",
                "office-2013-preview",
                "office-2016",
                "office-2019",
                "office-ltsc-2021",
                "office-ltsc-2024"
            ]
        );
        let mixed = c
            .parse_licensed("office-2016, windows-10-11,office-2016,,server-2019")
            .unwrap();
        // Catalog order, no duplicates.
        assert_eq!(mixed, ["server-2019", "windows-10-11", "office-2016"]);
        assert_eq!(
            c.parse_licensed("windows-10-11,office-2099"),
            Err(CatalogError::UnknownLicensedName {
                name: "office-2099".into()
            })
        );
        assert_eq!(
            c.parse_licensed(" , "),
            Err(CatalogError::EmptyLicensedSpec)
        );
    }

    #[test]
    fn newest_csvlk_per_application() {
        let c = Catalog::builtin();
        let all = c.parse_licensed("all").unwrap();
        let w = c.newest_csvlk_group(Application::Windows, &all).unwrap();
        assert_eq!(w.name, "server-2025");
        let o = c
            .newest_csvlk_group(Application::Office2013Plus, &all)
            .unwrap();
        assert_eq!(o.name, "office-ltsc-2024");
        let o10 = c.newest_csvlk_group(Application::Office2010, &all).unwrap();
        assert_eq!(o10.name, "office-2010");
        let some = ["windows-7", "windows-10-11", "office-2016"];
        assert_eq!(
            c.newest_csvlk_group(Application::Windows, &some)
                .unwrap()
                .name,
            "windows-10-11"
        );
        assert!(c
            .newest_csvlk_group(Application::Office2010, &some)
            .is_none());
        assert!(c
            .newest_csvlk_group(Application::Office2013Plus, &["office-2013-preview"])
            .is_none());
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Windows 10/11 Pro"), "windows-10-11-pro");
        assert_eq!(slugify("  Office LTSC  2024 "), "office-ltsc-2024");
        assert_eq!(slugify("Windows 8.1 Pro"), "windows-8-1-pro");
        assert_eq!(slugify("/-/"), "");
        assert!(is_slug("windows-8-1"));
        assert!(!is_slug("windows--8"));
        assert!(!is_slug("-x"));
        assert!(!is_slug("Windows"));
        assert!(!is_slug(""));
    }

    #[test]
    fn builtin_names_are_unique_slugs() {
        let c = Catalog::builtin();
        for g in c.groups() {
            assert!(is_slug(&g.name), "{}", g.name);
        }
        let mut slugs: Vec<String> = c.skus().flat_map(|s| s.names().map(slugify)).collect();
        let n = slugs.len();
        slugs.sort();
        slugs.dedup();
        assert_eq!(slugs.len(), n);
    }
}
