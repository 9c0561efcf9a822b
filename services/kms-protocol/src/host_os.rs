//! [`HostOs`]: which Windows Server release a KMS host claims to run.
//!
//! A Microsoft KMS host is one machine: every ePID it hands out names the same OS build and
//! platform id, whatever host key (CSVLK) it was made from. This module owns the releases a
//! host may claim (the server RTM builds of [`EPID_HOST_BUILDS`]), their configuration
//! spellings (`2012r2`, `2022`, `Windows Server 2025`, ...) and the check that a release can
//! hold a given CSVLK (a key installs only on its minimum host build or later).

use std::fmt;
use std::str::FromStr;

use crate::epid::{platform_id_for_build, HostBuild, EPID_HOST_BUILDS, PLATFORM_WIN10};
use crate::products::Csvlk;

/// A Windows Server release a KMS host can claim, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HostOs {
    /// Windows Server 2008 SP2, build 6002.
    Server2008,
    /// Windows Server 2008 R2 SP1, build 7601.
    Server2008R2,
    /// Windows Server 2012, build 9200.
    Server2012,
    /// Windows Server 2012 R2, build 9600.
    Server2012R2,
    /// Windows Server 2016, build 14393.
    Server2016,
    /// Windows Server 2019, build 17763.
    Server2019,
    /// Windows Server 2022, build 20348.
    Server2022,
    /// Windows Server 2025, build 26100.
    Server2025,
}

/// Why a host OS setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostOsError {
    /// Not a release this host can claim.
    #[error("unknown host OS {text:?}: expected one of 2008, 2008r2, 2012, 2012r2, 2016, 2019, 2022, 2025")]
    Unknown {
        /// The text given.
        text: String,
    },
    /// A licensed group's host key does not install on the claimed release.
    #[error("host OS {host} (build {build}) cannot hold the CSVLK of {group}: it needs build {min_host_build} or later; claim a newer host_os")]
    TooOld {
        /// The claimed release (configuration spelling).
        host: &'static str,
        /// Its build.
        build: u32,
        /// The product group whose CSVLK needs a newer host.
        group: String,
        /// That CSVLK's minimum host build.
        min_host_build: u32,
    },
}

impl HostOs {
    /// Every release, oldest first (the order of [`EPID_HOST_BUILDS`]).
    pub const ALL: [HostOs; 8] = [
        HostOs::Server2008,
        HostOs::Server2008R2,
        HostOs::Server2012,
        HostOs::Server2012R2,
        HostOs::Server2016,
        HostOs::Server2019,
        HostOs::Server2022,
        HostOs::Server2025,
    ];

    /// The newest release.
    pub const NEWEST: HostOs = HostOs::Server2025;

    fn index(self) -> usize {
        self as usize
    }

    /// Its build and release year.
    pub fn host_build(self) -> HostBuild {
        EPID_HOST_BUILDS[self.index()]
    }

    /// Its build number, e.g. 20348.
    pub fn build(self) -> u32 {
        self.host_build().build
    }

    /// The platform id its ePIDs carry (see [`platform_id_for_build`]).
    pub fn platform_id(self) -> u32 {
        platform_id_for_build(self.build()).unwrap_or(PLATFORM_WIN10)
    }

    /// The configuration spelling: `2008`, `2008r2`, `2012`, `2012r2`, `2016`, `2019`,
    /// `2022`, `2025`.
    pub fn name(self) -> &'static str {
        [
            "2008", "2008r2", "2012", "2012r2", "2016", "2019", "2022", "2025",
        ][self.index()]
    }

    /// The release whose build is exactly `build`.
    pub fn from_build(build: u32) -> Option<HostOs> {
        HostOs::ALL.into_iter().find(|os| os.build() == build)
    }

    /// The oldest release that installs every one of `csvlks` (the newest when none does).
    pub fn oldest_for<'a>(csvlks: impl IntoIterator<Item = &'a Csvlk>) -> HostOs {
        let need = csvlks
            .into_iter()
            .map(|c| c.min_host_build)
            .max()
            .unwrap_or(0);
        HostOs::ALL
            .into_iter()
            .find(|os| os.build() >= need)
            .unwrap_or(HostOs::NEWEST)
    }

    /// Checks that the host key of product group `group` installs on this release.
    pub fn check_csvlk(self, group: &str, csvlk: &Csvlk) -> Result<(), HostOsError> {
        if self.build() < csvlk.min_host_build {
            return Err(HostOsError::TooOld {
                host: self.name(),
                build: self.build(),
                group: group.to_owned(),
                min_host_build: csvlk.min_host_build,
            });
        }
        Ok(())
    }
}

impl fmt::Display for HostOs {
    /// `Windows Server 2012 R2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match name.strip_suffix("r2") {
            Some(year) => write!(f, "Windows Server {year} R2"),
            None => write!(f, "Windows Server {name}"),
        }
    }
}

impl FromStr for HostOs {
    type Err = HostOsError;

    /// Accepts the configuration spelling, the display name or a slug of it (case, spaces,
    /// `-` and `_` ignored: `2012r2`, `2012 R2`, `server-2012-r2`, `Windows Server 2012 R2`),
    /// or the build number (`20348`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || HostOsError::Unknown { text: s.to_owned() };
        let squashed: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase();
        let name = squashed
            .strip_prefix("windows")
            .unwrap_or(&squashed)
            .trim_start_matches("server");
        if let Some(os) = HostOs::ALL.into_iter().find(|os| os.name() == name) {
            return Ok(os);
        }
        name.parse::<u32>()
            .ok()
            .and_then(HostOs::from_build)
            .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::Catalog;

    #[test]
    fn releases_match_the_build_table() {
        for (os, b) in HostOs::ALL.iter().zip(EPID_HOST_BUILDS) {
            assert_eq!(os.host_build(), b);
            assert_eq!(HostOs::from_build(b.build), Some(*os));
            assert_eq!(platform_id_for_build(b.build), Some(os.platform_id()));
            assert_eq!(os.name().parse::<HostOs>(), Ok(*os));
            assert_eq!(os.to_string().parse::<HostOs>(), Ok(*os));
        }
        assert_eq!(
            (HostOs::Server2022.build(), HostOs::Server2022.platform_id()),
            (20348, 3612)
        );
        assert_eq!(
            (
                HostOs::Server2012R2.build(),
                HostOs::Server2012R2.platform_id()
            ),
            (9600, 6401)
        );
        assert_eq!(HostOs::Server2012R2.to_string(), "Windows Server 2012 R2");
        assert_eq!(HostOs::NEWEST, *HostOs::ALL.last().unwrap());
    }

    #[test]
    fn spellings() {
        for (text, os) in [
            ("2012r2", HostOs::Server2012R2),
            ("2012 R2", HostOs::Server2012R2),
            ("server-2012-r2", HostOs::Server2012R2),
            ("Windows Server 2025", HostOs::Server2025),
            ("windows_server_2019", HostOs::Server2019),
            ("20348", HostOs::Server2022),
        ] {
            assert_eq!(text.parse::<HostOs>(), Ok(os), "{text}");
        }
        for bad in ["", "2023", "2012r3", "vista", "9601", "server"] {
            assert!(
                matches!(bad.parse::<HostOs>(), Err(HostOsError::Unknown { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn csvlk_minimums() {
        let catalog = Catalog::builtin();
        let k2025 = catalog.group("server-2025").unwrap().csvlk.unwrap();
        let k2019 = catalog.group("server-2019").unwrap().csvlk.unwrap();
        // A key that needs Server 2025 (a catalog extension could add one).
        let k_new = Csvlk {
            min_host_build: 26100,
            ..k2025
        };
        assert_eq!(HostOs::Server2025.check_csvlk("future", &k_new), Ok(()));
        let err = HostOs::Server2022
            .check_csvlk("future", &k_new)
            .unwrap_err();
        assert_eq!(
            err,
            HostOsError::TooOld {
                host: "2022",
                build: 20348,
                group: "future".into(),
                min_host_build: 26100
            }
        );
        assert!(err.to_string().contains("future"));
        assert!(err.to_string().contains("26100"));
        assert!(HostOs::Server2012R2
            .check_csvlk("server-2025", &k2025)
            .is_err());
        assert_eq!(HostOs::oldest_for([&k2019]), HostOs::Server2012R2);
        assert_eq!(HostOs::oldest_for([&k2019, &k_new]), HostOs::Server2025);
        // The built-in catalog's keys all install on Server 2016 and later.
        let all: Vec<Csvlk> = catalog.groups().filter_map(|g| g.csvlk).collect();
        assert_eq!(HostOs::oldest_for(&all), HostOs::Server2016);
    }

    #[test]
    fn builds_off_the_table() {
        assert_eq!(HostBuild::of(20348).release_year, 2021);
        assert_eq!(HostBuild::of(22000).release_year, 2021);
        assert_eq!(HostBuild::of(28000).release_year, 2024);
        assert_eq!(HostBuild::of(5000).release_year, 0);
    }
}
