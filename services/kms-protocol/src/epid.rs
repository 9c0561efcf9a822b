//! KMS host extended product IDs (ePIDs): generation from caller-supplied random numbers and
//! date, strict parsing, and plausibility checks against the host key (CSVLK) they claim.
//!
//! This module owns the ePID text format of kms-protocol.md §4:
//!
//! ```text
//! PPPPP-GGGGG-KKK-KKKKKK-03-LLLL-BBBBB.0000-DDDYYYY
//! 06401-00206-471-111111-03-1033-17763.0000-2822018
//! ```
//!
//! platform id (5 digits), CSVLK group id (5 digits), CSVLK key id (9 digits split 3+6),
//! channel `03` (volume), host LCID (decimal, unpadded), host build (unpadded) with a literal
//! `.0000`, and the day of year (3 digits) and year (4 digits) the host was activated.
//!
//! Nothing here reads a clock or draws random numbers: [`Epid::generate`] takes both through
//! [`EpidChoice`], so the same inputs always give the same ePID.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::products::Csvlk;

/// The license channel every KMS host ePID carries: volume (CSVLK).
pub const CHANNEL_VOLUME: u8 = 3;

/// Platform id of builds up to 7601 (Vista, 7, Server 2008 and 2008 R2).
pub const PLATFORM_VISTA_7: u32 = 55041;
/// Platform id of build 9200 (Windows 8, Server 2012).
pub const PLATFORM_WIN8: u32 = 5426;
/// Platform id of build 9600 (Windows 8.1, Server 2012 R2).
pub const PLATFORM_WIN81: u32 = 6401;
/// Platform id of builds 10240 and later (Windows 10/11, Server 2016 to 2025).
pub const PLATFORM_WIN10: u32 = 3612;

/// LCID [`Epid::generate`] uses when the caller's is out of range: 1033, en-US.
pub const DEFAULT_LCID: u32 = 1033;

/// A host OS build that real KMS hosts run, with its release year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBuild {
    /// The build number (`BBBBB`).
    pub build: u32,
    /// The year it was released; no host on it can have been activated earlier.
    pub release_year: u16,
}

impl HostBuild {
    /// Any build with the release year of the newest known build not after it (0 before the
    /// oldest): a build past the table counts as released with the newest one.
    pub fn of(build: u32) -> HostBuild {
        HostBuild {
            build,
            release_year: EPID_HOST_BUILDS
                .iter()
                .filter(|b| b.build <= build)
                .map(|b| b.release_year)
                .max()
                .unwrap_or(0),
        }
    }
}

/// The host builds a host may claim (server RTM builds, as vlmcsd and py-kms use): Server
/// 2008 SP2, 2008 R2 SP1, 2012, 2012 R2, 2016, 2019, 2022, 2025; named by
/// [`crate::host_os::HostOs`].
pub const EPID_HOST_BUILDS: [HostBuild; 8] = [
    HostBuild {
        build: 6002,
        release_year: 2009,
    },
    HostBuild {
        build: 7601,
        release_year: 2011,
    },
    HostBuild {
        build: 9200,
        release_year: 2012,
    },
    HostBuild {
        build: 9600,
        release_year: 2013,
    },
    HostBuild {
        build: 14393,
        release_year: 2016,
    },
    HostBuild {
        build: 17763,
        release_year: 2018,
    },
    HostBuild {
        build: 20348,
        release_year: 2021,
    },
    HostBuild {
        build: 26100,
        release_year: 2024,
    },
];

/// The platform id that goes with a host build: 55041 up to 7601, 5426 for 9200, 6401 for
/// 9600, 3612 from 10240. `None` for builds between those (pre-release builds).
pub fn platform_id_for_build(build: u32) -> Option<u32> {
    match build {
        0..=7601 => Some(PLATFORM_VISTA_7),
        9200 => Some(PLATFORM_WIN8),
        9600 => Some(PLATFORM_WIN81),
        10240.. => Some(PLATFORM_WIN10),
        _ => None,
    }
}

/// Number of days in a (proleptic Gregorian) year: 365 or 366.
pub fn days_in_year(year: u16) -> u16 {
    let y = u32::from(year);
    if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) {
        366
    } else {
        365
    }
}

/// Converts Unix milliseconds (UTC) to `(year, day_of_year)`, the form [`EpidChoice`] takes
/// today's date in. Years past 9999 saturate to 9999-12-31.
pub fn date_from_unix_ms(ms: u64) -> (u16, u16) {
    let days = ms / 86_400_000;
    let ordinal = days_before_year(1970) + 1 + days;
    from_ordinal(ordinal.min(ordinal_of(9999, 365)))
}

/// Days from 0001-01-01 (exclusive of that year's own days) to the start of `year`.
fn days_before_year(year: u16) -> u64 {
    let y = u64::from(year.max(1)) - 1;
    365 * y + y / 4 - y / 100 + y / 400
}

/// Day number (1 = 0001-01-01) of a year and day of year.
fn ordinal_of(year: u16, day_of_year: u16) -> u64 {
    days_before_year(year) + u64::from(day_of_year)
}

/// Inverse of [`ordinal_of`] for ordinals up to 9999-12-31.
fn from_ordinal(ordinal: u64) -> (u16, u16) {
    let mut year = u16::try_from(ordinal * 400 / 146_097 + 1)
        .unwrap_or(9999)
        .clamp(1, 9999);
    while year > 1 && days_before_year(year) >= ordinal {
        year -= 1;
    }
    while year < 9999 && days_before_year(year + 1) < ordinal {
        year += 1;
    }
    let day = (ordinal - days_before_year(year)).clamp(1, u64::from(days_in_year(year)));
    (year, day as u16)
}

/// A uniformly chosen index in `0..n` from one caller-supplied random number (`n > 0`).
fn pick(random: u64, n: u64) -> u64 {
    ((u128::from(random) * u128::from(n)) >> 64) as u64
}

/// The choices behind a generated ePID, supplied by the caller so generation is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpidChoice {
    /// Uniform random numbers: `[1]` picks the key id, `[2]` the activation date; `[0]` and
    /// `[3]` are reserved and currently unused (`[0]` picked the host build before the host
    /// build became the caller's choice).
    pub random: [u64; 4],
    /// The host LCID to claim (1033 = en-US); outside 1..=65535 [`DEFAULT_LCID`] is used.
    pub lcid: u32,
    /// Today's year; the activation date is never after today.
    pub today_year: u16,
    /// Today's day of the year, 1-based (clamped to the year's length).
    pub today_day_of_year: u16,
}

/// Which part of an ePID an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EpidPart {
    /// `PPPPP`.
    PlatformId,
    /// `GGGGG`.
    GroupId,
    /// `KKK-KKKKKK`.
    KeyId,
    /// `03`.
    Channel,
    /// `LLLL`.
    Lcid,
    /// `BBBBB.0000`.
    Build,
    /// `DDDYYYY`.
    Date,
}

impl fmt::Display for EpidPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PlatformId => "platform id",
            Self::GroupId => "group id",
            Self::KeyId => "key id",
            Self::Channel => "channel",
            Self::Lcid => "LCID",
            Self::Build => "build",
            Self::Date => "date",
        })
    }
}

/// Why an ePID does not parse, cannot be displayed in the standard format, or does not fit
/// the host key it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpidError {
    /// The text does not have the eight `-`-separated parts.
    #[error("ePID has {found} '-'-separated parts, expected 8")]
    WrongPartCount {
        /// How many parts it has.
        found: usize,
    },
    /// One part has the wrong length, a non-digit, or a leading zero where none is allowed.
    #[error("ePID {part} {text:?} is malformed")]
    InvalidPart {
        /// Which part.
        part: EpidPart,
        /// The offending text.
        text: String,
    },
    /// A numeric field does not fit its width (only for values built in code).
    #[error("ePID {part} {value} does not fit its field")]
    FieldOutOfRange {
        /// Which part.
        part: EpidPart,
        /// The value.
        value: u32,
    },
    /// The channel is not `03` (volume).
    #[error("ePID channel {channel:02} is not 03 (volume)")]
    UnsupportedChannel {
        /// The channel found.
        channel: u8,
    },
    /// The day of year is 0 or past the end of the year.
    #[error("ePID day {day_of_year} does not exist in {year}")]
    InvalidDay {
        /// The day of year.
        day_of_year: u16,
        /// The year.
        year: u16,
    },
    /// The group id is not the CSVLK's.
    #[error("ePID group id {group_id} is not the CSVLK's {expected}")]
    GroupMismatch {
        /// The ePID's group id.
        group_id: u32,
        /// The CSVLK's.
        expected: u32,
    },
    /// The key id lies outside the CSVLK's range.
    #[error("ePID key id {key_id} is outside the CSVLK range {min}..{max}")]
    KeyIdOutOfRange {
        /// The ePID's key id.
        key_id: u32,
        /// Range start.
        min: u32,
        /// Range end (exclusive).
        max: u32,
    },
    /// The build is in a gap between known builds, so no platform id is known for it.
    #[error("ePID build {build} has no known platform id")]
    UnknownBuild {
        /// The build.
        build: u32,
    },
    /// The platform id does not belong to the build.
    #[error("ePID platform id {platform_id} does not go with build {build} (expected {expected})")]
    PlatformMismatch {
        /// The ePID's platform id.
        platform_id: u32,
        /// The ePID's build.
        build: u32,
        /// The platform id of that build.
        expected: u32,
    },
    /// The CSVLK cannot be installed on a host this old.
    #[error("ePID build {build} is older than the CSVLK's minimum host build {min_host_build}")]
    BuildTooOld {
        /// The ePID's build.
        build: u32,
        /// The CSVLK's minimum.
        min_host_build: u32,
    },
    /// The activation year precedes the CSVLK's or the host build's release.
    #[error("ePID activation year {year} is before {earliest}, when its key or build came out")]
    ActivatedBeforeRelease {
        /// The ePID's year.
        year: u16,
        /// The earliest plausible year.
        earliest: u16,
    },
}

/// A KMS host ePID. Fields are public so tests and fixed-ePID configuration can build one;
/// [`Epid::check_format`] says whether it displays in the standard format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epid {
    /// Platform id of the host build (`PPPPP`), see [`platform_id_for_build`].
    pub platform_id: u32,
    /// CSVLK group id (`GGGGG`).
    pub group_id: u32,
    /// CSVLK key id (`KKK-KKKKKK`), 0..=999999999.
    pub key_id: u32,
    /// License channel, always [`CHANNEL_VOLUME`].
    pub channel: u8,
    /// Host LCID, e.g. 1033.
    pub lcid: u32,
    /// Host OS build, e.g. 17763.
    pub build: u32,
    /// Day of the year the host was activated, 1-based.
    pub day_of_year: u16,
    /// Year the host was activated.
    pub year: u16,
}

impl Epid {
    /// Generates a plausible ePID for a host running `host` (see [`crate::host_os::HostOs`])
    /// and holding `csvlk`, deterministically from `choice`.
    ///
    /// The platform id and build are the host's, so every ePID of one host names the same
    /// OS. The key id is uniform in the CSVLK's range, and the activation day uniform between
    /// January 1 of the later of the key's and the build's release years and today. The date
    /// is never after today; if today precedes those releases (a wrong clock), it is today and
    /// [`Epid::validate_for`] will report it. For a CSVLK that passed catalog validation and a
    /// correct date, the result always validates against it.
    ///
    /// Fails with [`EpidError::BuildTooOld`] when the CSVLK does not install on the host's
    /// build: a host cannot hold that key.
    pub fn generate(csvlk: &Csvlk, host: HostBuild, choice: EpidChoice) -> Result<Epid, EpidError> {
        if host.build < csvlk.min_host_build {
            return Err(EpidError::BuildTooOld {
                build: host.build,
                min_host_build: csvlk.min_host_build,
            });
        }
        let today_year = choice.today_year.clamp(1, 9999);
        let today_day = choice.today_day_of_year.clamp(1, days_in_year(today_year));

        let key_id = if csvlk.key_id_max > csvlk.key_id_min {
            let span = u64::from(csvlk.key_id_max - csvlk.key_id_min);
            csvlk.key_id_min + pick(choice.random[1], span) as u32
        } else {
            csvlk.key_id_min
        };

        let start_year = csvlk.release_year.max(host.release_year).clamp(1, 9999);
        let start = ordinal_of(start_year, 1);
        let end = ordinal_of(today_year, today_day);
        let (year, day_of_year) = if start > end {
            (today_year, today_day)
        } else {
            from_ordinal(start + pick(choice.random[2], end - start + 1))
        };

        Ok(Epid {
            platform_id: platform_id_for_build(host.build).unwrap_or(PLATFORM_WIN10),
            group_id: csvlk.epid_group_id,
            key_id: key_id.min(999_999_999),
            channel: CHANNEL_VOLUME,
            lcid: if (1..=65_535).contains(&choice.lcid) {
                choice.lcid
            } else {
                DEFAULT_LCID
            },
            build: host.build,
            day_of_year,
            year,
        })
    }

    /// Parses the standard text form strictly: exact digit counts for the fixed-width parts,
    /// no leading zeros in the LCID and build, 4 or 5 build digits, the literal `.0000`,
    /// channel `03`, and a day that exists in the year. No surrounding spaces or NUL.
    pub fn parse(s: &str) -> Result<Epid, EpidError> {
        let parts: Vec<&str> = s.split('-').collect();
        let &[platform, group, key_hi, key_lo, channel, lcid, build, date] = parts.as_slice()
        else {
            return Err(EpidError::WrongPartCount { found: parts.len() });
        };
        let platform_id = fixed_digits(platform, 5, EpidPart::PlatformId)?;
        let group_id = fixed_digits(group, 5, EpidPart::GroupId)?;
        let key_id = fixed_digits(key_hi, 3, EpidPart::KeyId)? * 1_000_000
            + fixed_digits(key_lo, 6, EpidPart::KeyId)?;
        let channel = fixed_digits(channel, 2, EpidPart::Channel)? as u8;
        if channel != CHANNEL_VOLUME {
            return Err(EpidError::UnsupportedChannel { channel });
        }
        let lcid = unpadded_digits(lcid, 1..=5, EpidPart::Lcid)?;
        let build = match build.split_once('.') {
            Some((number, "0000")) => unpadded_digits(number, 4..=5, EpidPart::Build)
                .map_err(|_| invalid(EpidPart::Build, build))?,
            _ => return Err(invalid(EpidPart::Build, build)),
        };
        let date_value = fixed_digits(date, 7, EpidPart::Date)?;
        let day_of_year = (date_value / 10_000) as u16;
        let year = (date_value % 10_000) as u16;
        if day_of_year == 0 || day_of_year > days_in_year(year) {
            return Err(EpidError::InvalidDay { day_of_year, year });
        }
        Ok(Epid {
            platform_id,
            group_id,
            key_id,
            channel,
            lcid,
            build,
            day_of_year,
            year,
        })
    }

    /// Checks that every field fits the standard format, so [`Display`](fmt::Display) output
    /// parses back to the same value.
    pub fn check_format(&self) -> Result<(), EpidError> {
        let fits = [
            (EpidPart::PlatformId, self.platform_id, 0..=99_999),
            (EpidPart::GroupId, self.group_id, 0..=99_999),
            (EpidPart::KeyId, self.key_id, 0..=999_999_999),
            (EpidPart::Lcid, self.lcid, 1..=99_999),
            (EpidPart::Build, self.build, 1000..=99_999),
        ];
        for (part, value, range) in fits {
            if !range.contains(&value) {
                return Err(EpidError::FieldOutOfRange { part, value });
            }
        }
        if self.channel != CHANNEL_VOLUME {
            return Err(EpidError::UnsupportedChannel {
                channel: self.channel,
            });
        }
        if self.year > 9999 {
            return Err(EpidError::FieldOutOfRange {
                part: EpidPart::Date,
                value: u32::from(self.year),
            });
        }
        if self.day_of_year == 0 || self.day_of_year > days_in_year(self.year) {
            return Err(EpidError::InvalidDay {
                day_of_year: self.day_of_year,
                year: self.year,
            });
        }
        Ok(())
    }

    /// Checks that the ePID is one a host holding `csvlk` could send: well formed, the CSVLK's
    /// group id, a key id in its range, the platform id of the build, a build the key installs
    /// on, and an activation year not before the key's or the build's release.
    ///
    /// It cannot check that the date is not in the future (no clock); compare
    /// [`Epid::year`]/[`Epid::day_of_year`] with today for that.
    pub fn validate_for(&self, csvlk: &Csvlk) -> Result<(), EpidError> {
        self.check_format()?;
        if self.group_id != csvlk.epid_group_id {
            return Err(EpidError::GroupMismatch {
                group_id: self.group_id,
                expected: csvlk.epid_group_id,
            });
        }
        if !(csvlk.key_id_min..csvlk.key_id_max).contains(&self.key_id) {
            return Err(EpidError::KeyIdOutOfRange {
                key_id: self.key_id,
                min: csvlk.key_id_min,
                max: csvlk.key_id_max,
            });
        }
        let expected = platform_id_for_build(self.build)
            .ok_or(EpidError::UnknownBuild { build: self.build })?;
        if self.platform_id != expected {
            return Err(EpidError::PlatformMismatch {
                platform_id: self.platform_id,
                build: self.build,
                expected,
            });
        }
        if self.build < csvlk.min_host_build {
            return Err(EpidError::BuildTooOld {
                build: self.build,
                min_host_build: csvlk.min_host_build,
            });
        }
        let earliest = csvlk
            .release_year
            .max(HostBuild::of(self.build).release_year);
        if self.year < earliest {
            return Err(EpidError::ActivatedBeforeRelease {
                year: self.year,
                earliest,
            });
        }
        Ok(())
    }
}

fn invalid(part: EpidPart, text: &str) -> EpidError {
    EpidError::InvalidPart {
        part,
        text: text.to_owned(),
    }
}

/// Exactly `width` ASCII digits (width ≤ 9, so the value fits a u32).
fn fixed_digits(text: &str, width: usize, part: EpidPart) -> Result<u32, EpidError> {
    if text.len() != width || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(part, text));
    }
    text.parse().map_err(|_| invalid(part, text))
}

/// A number of `digits` ASCII digits without a leading zero.
fn unpadded_digits(
    text: &str,
    digits: std::ops::RangeInclusive<usize>,
    part: EpidPart,
) -> Result<u32, EpidError> {
    if !digits.contains(&text.len())
        || text.starts_with('0')
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(part, text));
    }
    text.parse().map_err(|_| invalid(part, text))
}

impl fmt::Display for Epid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:05}-{:05}-{:03}-{:06}-{:02}-{}-{}.0000-{:03}{:04}",
            self.platform_id,
            self.group_id,
            self.key_id / 1_000_000,
            self.key_id % 1_000_000,
            self.channel,
            self.lcid,
            self.build,
            self.day_of_year,
            self.year
        )
    }
}

impl FromStr for Epid {
    type Err = EpidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Epid::parse(s)
    }
}

impl Serialize for Epid {
    /// As its text form.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epid {
    /// From its text form, parsed strictly.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Epid::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::Catalog;
    use proptest::prelude::*;

    const VLMCSD_FIXED: &str = "06401-00206-471-111111-03-1033-17763.0000-2822018";
    const WIN7_HOST: &str = "55041-00172-037-474982-03-1041-7601.0000-1302011";

    fn csvlk(group: &str) -> Csvlk {
        Catalog::builtin().group(group).unwrap().csvlk.unwrap()
    }

    fn choice(random: [u64; 4], today_year: u16, today_day_of_year: u16) -> EpidChoice {
        EpidChoice {
            random,
            lcid: 1033,
            today_year,
            today_day_of_year,
        }
    }

    #[test]
    fn examples_round_trip() {
        let e = Epid::parse(VLMCSD_FIXED).unwrap();
        assert_eq!(
            e,
            Epid {
                platform_id: 6401,
                group_id: 206,
                key_id: 471_111_111,
                channel: 3,
                lcid: 1033,
                build: 17763,
                day_of_year: 282,
                year: 2018,
            }
        );
        assert_eq!(e.to_string(), VLMCSD_FIXED);
        assert_eq!(VLMCSD_FIXED.len(), 49);

        let w7 = Epid::parse(WIN7_HOST).unwrap();
        assert_eq!(
            w7,
            Epid {
                platform_id: 55041,
                group_id: 172,
                key_id: 37_474_982,
                channel: 3,
                lcid: 1041,
                build: 7601,
                day_of_year: 130,
                year: 2011,
            }
        );
        assert_eq!(w7.to_string(), WIN7_HOST);
        assert_eq!(WIN7_HOST.parse::<Epid>().unwrap(), w7);
        let json = serde_json::to_string(&w7).unwrap();
        assert_eq!(json, format!("\"{WIN7_HOST}\""));
        assert_eq!(serde_json::from_str::<Epid>(&json).unwrap(), w7);
    }

    #[test]
    fn examples_against_their_csvlks() {
        let w7 = Epid::parse(WIN7_HOST).unwrap();
        assert_eq!(w7.validate_for(&csvlk("windows-7")), Ok(()));
        assert_eq!(
            w7.validate_for(&csvlk("server-2019")),
            Err(EpidError::GroupMismatch {
                group_id: 172,
                expected: 206
            })
        );
        // The fixed ePID the captures' vlmcsd was configured with is not self-consistent:
        // its key id fits no Windows CSVLK we know, and 06401 is 9600's platform id.
        let fixed = Epid::parse(VLMCSD_FIXED).unwrap();
        assert_eq!(
            fixed.validate_for(&csvlk("server-2019")),
            Err(EpidError::KeyIdOutOfRange {
                key_id: 471_111_111,
                min: 551_000_000,
                max: 571_000_000
            })
        );
        let in_range = Epid {
            key_id: 560_000_000,
            ..fixed
        };
        assert_eq!(
            in_range.validate_for(&csvlk("server-2019")),
            Err(EpidError::PlatformMismatch {
                platform_id: 6401,
                build: 17763,
                expected: 3612
            })
        );
        let consistent = Epid {
            platform_id: 3612,
            ..in_range
        };
        assert_eq!(consistent.validate_for(&csvlk("server-2019")), Ok(()));
        // py-kms's own default ePIDs for these CSVLKs validate.
        for (group, text) in [
            (
                "office-2016",
                "06401-00206-456-865118-03-1033-9600.0000-2802018",
            ),
            (
                "office-2019",
                "06401-00206-678-008369-03-1033-9600.0000-2802018",
            ),
            (
                "office-ltsc-2021",
                "05426-00206-586-025264-03-1033-9200.0000-2602021",
            ),
            (
                "office-2010",
                "06401-00096-208-497764-03-1033-9600.0000-2802018",
            ),
            (
                "windows-10-11-china-gov",
                "06401-03858-320-801028-03-1033-9600.0000-2802018",
            ),
        ] {
            let e = Epid::parse(text).unwrap();
            assert_eq!(e.validate_for(&csvlk(group)), Ok(()), "{group}");
        }
    }

    #[test]
    fn validation_errors() {
        let k = csvlk("server-2019");
        let good = Epid {
            platform_id: PLATFORM_WIN10,
            group_id: 206,
            key_id: 551_000_000,
            channel: 3,
            lcid: 1033,
            build: 17763,
            day_of_year: 1,
            year: 2018,
        };
        assert_eq!(good.validate_for(&k), Ok(()));
        assert!(matches!(
            Epid {
                key_id: 571_000_000,
                ..good
            }
            .validate_for(&k),
            Err(EpidError::KeyIdOutOfRange { .. })
        ));
        assert_eq!(
            Epid {
                platform_id: PLATFORM_VISTA_7,
                build: 7601,
                ..good
            }
            .validate_for(&k),
            Err(EpidError::BuildTooOld {
                build: 7601,
                min_host_build: 9600
            })
        );
        assert_eq!(
            Epid {
                build: 9800,
                ..good
            }
            .validate_for(&k),
            Err(EpidError::UnknownBuild { build: 9800 })
        );
        assert_eq!(
            Epid { year: 2017, ..good }.validate_for(&k),
            Err(EpidError::ActivatedBeforeRelease {
                year: 2017,
                earliest: 2018
            })
        );
        // The build's release counts too: 20348 came out in 2021.
        assert_eq!(
            Epid {
                build: 20348,
                year: 2019,
                ..good
            }
            .validate_for(&k),
            Err(EpidError::ActivatedBeforeRelease {
                year: 2019,
                earliest: 2021
            })
        );
        assert_eq!(
            Epid { channel: 2, ..good }.validate_for(&k),
            Err(EpidError::UnsupportedChannel { channel: 2 })
        );
        assert_eq!(
            Epid {
                day_of_year: 366,
                ..good
            }
            .check_format(),
            Err(EpidError::InvalidDay {
                day_of_year: 366,
                year: 2018
            })
        );
        assert_eq!(
            Epid {
                key_id: 1_000_000_000,
                ..good
            }
            .check_format(),
            Err(EpidError::FieldOutOfRange {
                part: EpidPart::KeyId,
                value: 1_000_000_000
            })
        );
        assert!(Epid { lcid: 0, ..good }.check_format().is_err());
        assert!(Epid { build: 999, ..good }.check_format().is_err());
    }

    #[test]
    fn parse_is_strict() {
        let cases: &[(&str, EpidError)] = &[
            (
                "06401-00206-471-111111-03-1033",
                EpidError::WrongPartCount { found: 6 },
            ),
            (
                "06401-00206-471-111111-03-1033-17763.0000-2822018-",
                EpidError::WrongPartCount { found: 9 },
            ),
            (
                "6401-00206-471-111111-03-1033-17763.0000-2822018",
                invalid(EpidPart::PlatformId, "6401"),
            ),
            (
                "06401-0020x-471-111111-03-1033-17763.0000-2822018",
                invalid(EpidPart::GroupId, "0020x"),
            ),
            (
                "06401-00206-4711-11111-03-1033-17763.0000-2822018",
                invalid(EpidPart::KeyId, "4711"),
            ),
            (
                "06401-00206-471-+11111-03-1033-17763.0000-2822018",
                invalid(EpidPart::KeyId, "+11111"),
            ),
            (
                "06401-00206-471-111111-3-1033-17763.0000-2822018",
                invalid(EpidPart::Channel, "3"),
            ),
            (
                "06401-00206-471-111111-02-1033-17763.0000-2822018",
                EpidError::UnsupportedChannel { channel: 2 },
            ),
            (
                "06401-00206-471-111111-03-01033-17763.0000-2822018",
                invalid(EpidPart::Lcid, "01033"),
            ),
            (
                "06401-00206-471-111111-03--17763.0000-2822018",
                invalid(EpidPart::Lcid, ""),
            ),
            (
                "06401-00206-471-111111-03-1033-17763-2822018",
                invalid(EpidPart::Build, "17763"),
            ),
            (
                "06401-00206-471-111111-03-1033-17763.0001-2822018",
                invalid(EpidPart::Build, "17763.0001"),
            ),
            (
                "06401-00206-471-111111-03-1033-17763-0000-2822018",
                EpidError::WrongPartCount { found: 9 },
            ),
            (
                "06401-00206-471-111111-03-1033-017763.0000-2822018",
                invalid(EpidPart::Build, "017763.0000"),
            ),
            (
                "06401-00206-471-111111-03-1033-763.0000-2822018",
                invalid(EpidPart::Build, "763.0000"),
            ),
            (
                "06401-00206-471-111111-03-1033-17763.0000-282018",
                invalid(EpidPart::Date, "282018"),
            ),
            (
                "06401-00206-471-111111-03-1033-17763.0000-3662018",
                EpidError::InvalidDay {
                    day_of_year: 366,
                    year: 2018,
                },
            ),
            (
                "06401-00206-471-111111-03-1033-17763.0000-0002018",
                EpidError::InvalidDay {
                    day_of_year: 0,
                    year: 2018,
                },
            ),
            (
                "06401-00206-471-111111-03-1033-17763.0000-2822018\0",
                invalid(EpidPart::Date, "2822018\0"),
            ),
            (
                " 06401-00206-471-111111-03-1033-17763.0000-2822018",
                invalid(EpidPart::PlatformId, " 06401"),
            ),
            (
                "٠6401-00206-471-111111-03-1033-17763.0000-2822018",
                invalid(EpidPart::PlatformId, "٠6401"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Epid::parse(text).as_ref(), Err(expected), "{text:?}");
        }
        // Day 366 exists in leap years.
        let leap = Epid::parse("03612-00206-551-000000-03-1033-17763.0000-3662024").unwrap();
        assert_eq!((leap.day_of_year, leap.year), (366, 2024));
        // Five-digit LCIDs and four-digit builds are fine.
        let e = Epid::parse("55041-00172-037-474982-03-66666-6002.0000-0012009").unwrap();
        assert_eq!((e.lcid, e.build), (66666, 6002));
    }

    #[test]
    fn platform_ids() {
        assert_eq!(platform_id_for_build(6002), Some(55041));
        assert_eq!(platform_id_for_build(7601), Some(55041));
        assert_eq!(platform_id_for_build(9200), Some(5426));
        assert_eq!(platform_id_for_build(9600), Some(6401));
        assert_eq!(platform_id_for_build(10240), Some(3612));
        assert_eq!(platform_id_for_build(26100), Some(3612));
        assert_eq!(platform_id_for_build(8102), None);
        assert_eq!(platform_id_for_build(9800), None);
        for b in EPID_HOST_BUILDS {
            assert!(platform_id_for_build(b.build).is_some());
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date_from_unix_ms(0), (1970, 1));
        // 2026-11-24T01:59:12Z, the v6 capture's request time.
        assert_eq!(date_from_unix_ms(1_795_485_552_000), (2026, 328));
        // 2024-12-31 and 2025-01-01.
        assert_eq!(date_from_unix_ms(1_735_603_200_000), (2024, 366));
        assert_eq!(date_from_unix_ms(1_735_689_600_000), (2025, 1));
        assert_eq!(date_from_unix_ms(u64::MAX), (9999, 365));
        assert_eq!(days_in_year(2000), 366);
        assert_eq!(days_in_year(1900), 365);
        for (y, d) in [(1, 1), (2000, 366), (2100, 365), (9999, 365), (2024, 60)] {
            assert_eq!(from_ordinal(ordinal_of(y, d)), (y, d));
        }
    }

    fn build(b: u32) -> HostBuild {
        HostBuild::of(b)
    }

    #[test]
    fn generate_is_deterministic_and_uses_the_given_build() {
        let k = csvlk("windows-7");
        let c = choice([1, 2, 3, 4], 2026, 328);
        assert_eq!(
            Epid::generate(&k, build(20348), c),
            Epid::generate(&k, build(20348), c)
        );
        let mut keys = std::collections::BTreeSet::new();
        for i in 0..64u64 {
            let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let e = Epid::generate(&k, build(20348), choice([r, r, r, 0], 2026, 328)).unwrap();
            assert_eq!(e.validate_for(&k), Ok(()));
            // One host, one OS: the build and platform never vary with the random numbers.
            assert_eq!((e.build, e.platform_id), (20348, PLATFORM_WIN10));
            assert!(e.year >= 2021, "{e}: before 20348's release");
            keys.insert(e.key_id);
        }
        assert!(keys.len() > 32, "key ids should vary: {keys:?}");
        let lo = Epid::generate(&k, build(7601), choice([0, 0, 0, 0], 2026, 328)).unwrap();
        assert_eq!(
            (lo.platform_id, lo.build, lo.key_id, lo.day_of_year, lo.year),
            (PLATFORM_VISTA_7, 7601, 37_000_000, 1, 2011)
        );
        let hi = Epid::generate(&k, build(26100), choice([u64::MAX; 4], 2026, 328)).unwrap();
        assert_eq!(
            (hi.build, hi.key_id, hi.day_of_year, hi.year),
            (26100, 49_749_999, 328, 2026)
        );
        let r2 = Epid::generate(&k, build(9600), choice([0; 4], 2026, 328)).unwrap();
        assert_eq!(
            (r2.platform_id, r2.build, r2.year),
            (PLATFORM_WIN81, 9600, 2013)
        );
    }

    #[test]
    fn generate_refuses_a_host_too_old_for_the_key() {
        let k = csvlk("server-2025");
        assert_eq!(
            Epid::generate(&k, build(9600), choice([1; 4], 2026, 1)),
            Err(EpidError::BuildTooOld {
                build: 9600,
                min_host_build: 14393
            })
        );
        assert!(Epid::generate(&k, build(26100), choice([1; 4], 2026, 1)).is_ok());
    }

    #[test]
    fn generate_with_odd_inputs() {
        let k = csvlk("server-2025");
        let host = build(26100);
        // Today before the key's release (wrong clock): the date is today, not later.
        let e = Epid::generate(&k, host, choice([5; 4], 2020, 10)).unwrap();
        assert_eq!((e.year, e.day_of_year), (2020, 10));
        assert_eq!(e.build, 26100);
        assert!(matches!(
            e.validate_for(&k),
            Err(EpidError::ActivatedBeforeRelease { .. })
        ));
        // Day past the end of the year is clamped.
        let e = Epid::generate(&k, host, choice([u64::MAX; 4], 2025, 400)).unwrap();
        assert_eq!((e.year, e.day_of_year), (2025, 365));
        // LCID out of range falls back to en-US.
        let e = Epid::generate(
            &k,
            host,
            EpidChoice {
                lcid: 0,
                ..choice([7; 4], 2026, 1)
            },
        )
        .unwrap();
        assert_eq!(e.lcid, DEFAULT_LCID);
        // A build past the table is used as is, with the newest platform id.
        let future = Csvlk {
            min_host_build: 28000,
            release_year: 2026,
            ..k
        };
        let e = Epid::generate(&future, build(28000), choice([9; 4], 2027, 100)).unwrap();
        assert_eq!((e.build, e.platform_id), (28000, PLATFORM_WIN10));
        assert_eq!(e.validate_for(&future), Ok(()));
    }

    fn builtin_csvlks() -> Vec<(String, Csvlk)> {
        Catalog::builtin()
            .groups()
            .filter_map(|g| g.csvlk.map(|c| (g.name.clone(), c)))
            .collect()
    }

    proptest! {
        #[test]
        fn generated_epids_validate(
            random in any::<[u64; 4]>(),
            lcid in 1u32..=65_535,
            today_year in 2025u16..=2100,
            today_day in 1u16..=366,
        ) {
            for (name, k) in builtin_csvlks() {
                let c = EpidChoice { random, lcid, today_year, today_day_of_year: today_day };
                let host = EPID_HOST_BUILDS[(random[0] % 8) as usize];
                let e = match Epid::generate(&k, host, c) {
                    Ok(e) => e,
                    Err(err) => {
                        prop_assert!(host.build < k.min_host_build, "{} {}", name, err);
                        continue;
                    }
                };
                prop_assert_eq!(e.build, host.build);
                prop_assert_eq!(e.validate_for(&k), Ok(()), "{} {}", name, e);
                let today = (today_year, today_day.min(days_in_year(today_year)));
                prop_assert!((e.year, e.day_of_year) <= today, "{} {} in the future", name, e);
                prop_assert_eq!(e.lcid, lcid);
                let text = e.to_string();
                let expected_len = 40 + lcid.to_string().len() + e.build.to_string().len();
                prop_assert_eq!(text.len(), expected_len);
                if (1000..=9999).contains(&lcid) && e.build >= 10_000 {
                    prop_assert_eq!(text.len(), 49);
                }
                prop_assert_eq!(Epid::parse(&text), Ok(e));
            }
        }

        #[test]
        fn parse_never_panics_and_round_trips(s in "[0-9.\\-]{0,60}") {
            if let Ok(e) = Epid::parse(&s) {
                prop_assert_eq!(e.to_string(), s);
                prop_assert_eq!(e.check_format(), Ok(()));
            }
        }

        #[test]
        fn well_formed_values_round_trip(
            platform_id in 0u32..=99_999,
            group_id in 0u32..=99_999,
            key_id in 0u32..=999_999_999,
            lcid in 1u32..=99_999,
            build in 1000u32..=99_999,
            year in 0u16..=9999,
            day in 1u16..=366,
        ) {
            let e = Epid {
                platform_id, group_id, key_id, channel: 3, lcid, build,
                day_of_year: day.min(days_in_year(year)), year,
            };
            prop_assert_eq!(e.check_format(), Ok(()));
            prop_assert_eq!(Epid::parse(&e.to_string()), Ok(e));
        }

        #[test]
        fn unix_dates_round_trip(days in 0u64..2_900_000) {
            let (y, d) = date_from_unix_ms(days * 86_400_000 + 3_600_000);
            prop_assert!(d >= 1 && d <= days_in_year(y));
            prop_assert_eq!(ordinal_of(y, d), days_before_year(1970) + 1 + days);
        }
    }
}
