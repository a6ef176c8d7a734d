//! Cloud KMS resource names. Parsing is strict: every error names the offending text.

use super::error::KmsError;
use std::fmt;

/// `[a-zA-Z0-9_-]{1,63}`: the id rule for key rings, keys and import jobs.
pub fn valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Project ids are more permissive than GCP's (tests use names like `test-project`),
/// but still a single path segment of safe characters.
pub fn valid_project(p: &str) -> bool {
    (1..=100).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b':')
}

fn check_id(kind: &str, id: &str) -> Result<(), KmsError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(KmsError::InvalidArgument(format!(
            "{kind} id \"{id}\" must match [a-zA-Z0-9_-]{{1,63}}."
        )))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationName {
    pub project: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRingName {
    pub project: String,
    pub location: String,
    pub key_ring: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CryptoKeyName {
    pub key_ring: KeyRingName,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionName {
    pub key: CryptoKeyName,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImportJobName {
    pub key_ring: KeyRingName,
    pub job: String,
}

impl LocationName {
    pub fn new(project: &str, location: &str) -> Result<Self, KmsError> {
        if !valid_project(project) {
            return Err(KmsError::InvalidArgument(format!("Invalid project \"{project}\".")));
        }
        if sealstore_core::locations::find(location).is_none_or(|l| l.id != location) {
            return Err(KmsError::InvalidArgument(format!(
                "Location \"{location}\" is not a Cloud KMS location known to sealstore."
            )));
        }
        Ok(Self {
            project: project.to_owned(),
            location: location.to_owned(),
        })
    }

    pub fn key_ring(&self, id: &str) -> Result<KeyRingName, KmsError> {
        check_id("KeyRing", id)?;
        Ok(KeyRingName {
            project: self.project.clone(),
            location: self.location.clone(),
            key_ring: id.to_owned(),
        })
    }
}

impl KeyRingName {
    pub fn parent(&self) -> LocationName {
        LocationName {
            project: self.project.clone(),
            location: self.location.clone(),
        }
    }
    pub fn crypto_key(&self, id: &str) -> Result<CryptoKeyName, KmsError> {
        check_id("CryptoKey", id)?;
        Ok(CryptoKeyName {
            key_ring: self.clone(),
            key: id.to_owned(),
        })
    }
    pub fn import_job(&self, id: &str) -> Result<ImportJobName, KmsError> {
        check_id("ImportJob", id)?;
        Ok(ImportJobName {
            key_ring: self.clone(),
            job: id.to_owned(),
        })
    }
}

impl CryptoKeyName {
    pub fn version(&self, id: u32) -> VersionName {
        VersionName {
            key: self.clone(),
            version: id,
        }
    }
}

impl VersionName {
    pub fn parse_id(key: &CryptoKeyName, id: &str) -> Result<Self, KmsError> {
        match id.parse::<u32>() {
            Ok(n) if n > 0 && !id.starts_with('0') => Ok(key.version(n)),
            _ => Err(KmsError::InvalidArgument(format!(
                "Invalid CryptoKeyVersion id \"{id}\" for {key}."
            ))),
        }
    }
}

impl fmt::Display for LocationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}", self.project, self.location)
    }
}
impl fmt::Display for KeyRingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/locations/{}/keyRings/{}",
            self.project, self.location, self.key_ring
        )
    }
}
impl fmt::Display for CryptoKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/cryptoKeys/{}", self.key_ring, self.key)
    }
}
impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/cryptoKeyVersions/{}", self.key, self.version)
    }
}
impl fmt::Display for ImportJobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/importJobs/{}", self.key_ring, self.job)
    }
}

/// Any KMS resource name, parsed from its full string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceName {
    Location(LocationName),
    KeyRing(KeyRingName),
    CryptoKey(CryptoKeyName),
    Version(VersionName),
    ImportJob(ImportJobName),
}

impl ResourceName {
    pub fn parse(s: &str) -> Result<Self, KmsError> {
        let bad = || KmsError::InvalidArgument(format!("Resource name \"{s}\" is malformed."));
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 4 || parts[0] != "projects" || parts[2] != "locations" {
            return Err(bad());
        }
        let loc = LocationName::new(parts[1], parts[3])?;
        match parts.len() {
            4 => Ok(Self::Location(loc)),
            6 if parts[4] == "keyRings" => Ok(Self::KeyRing(loc.key_ring(parts[5])?)),
            8 if parts[4] == "keyRings" && parts[6] == "cryptoKeys" => {
                Ok(Self::CryptoKey(loc.key_ring(parts[5])?.crypto_key(parts[7])?))
            }
            8 if parts[4] == "keyRings" && parts[6] == "importJobs" => {
                Ok(Self::ImportJob(loc.key_ring(parts[5])?.import_job(parts[7])?))
            }
            10 if parts[4] == "keyRings" && parts[6] == "cryptoKeys" && parts[8] == "cryptoKeyVersions" => {
                let key = loc.key_ring(parts[5])?.crypto_key(parts[7])?;
                Ok(Self::Version(VersionName::parse_id(&key, parts[9])?))
            }
            _ => Err(bad()),
        }
    }

    pub fn parse_key(s: &str) -> Result<CryptoKeyName, KmsError> {
        match Self::parse(s)? {
            Self::CryptoKey(k) => Ok(k),
            _ => Err(KmsError::InvalidArgument(format!("\"{s}\" is not a CryptoKey name."))),
        }
    }

    pub fn parse_version(s: &str) -> Result<VersionName, KmsError> {
        match Self::parse(s)? {
            Self::Version(v) => Ok(v),
            _ => Err(KmsError::InvalidArgument(format!(
                "\"{s}\" is not a CryptoKeyVersion name."
            ))),
        }
    }

    pub fn parse_import_job(s: &str) -> Result<ImportJobName, KmsError> {
        match Self::parse(s)? {
            Self::ImportJob(j) => Ok(j),
            _ => Err(KmsError::InvalidArgument(format!("\"{s}\" is not an ImportJob name."))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_every_kind() {
        for s in [
            "projects/p/locations/us-east1",
            "projects/p/locations/us-east1/keyRings/kr",
            "projects/p/locations/global/keyRings/kr/cryptoKeys/k-1",
            "projects/p/locations/nam4/keyRings/kr/cryptoKeys/k/cryptoKeyVersions/12",
            "projects/p/locations/eu/keyRings/kr/importJobs/j_1",
        ] {
            let n = ResourceName::parse(s).unwrap();
            let back = match n {
                ResourceName::Location(x) => x.to_string(),
                ResourceName::KeyRing(x) => x.to_string(),
                ResourceName::CryptoKey(x) => x.to_string(),
                ResourceName::Version(x) => x.to_string(),
                ResourceName::ImportJob(x) => x.to_string(),
            };
            assert_eq!(back, s);
        }
    }

    #[test]
    fn rejects_malformed_names() {
        for s in [
            "",
            "projects/p",
            "projects/p/locations/mars/keyRings/kr",
            "projects/p/locations/us-east1/keyRings/bad!id",
            "projects/p/locations/us-east1/keyRings/kr/cryptoKeys/k/cryptoKeyVersions/0",
            "projects/p/locations/us-east1/keyRings/kr/cryptoKeys/k/cryptoKeyVersions/01",
            "projects/p/locations/us-east1/keyRings/kr/cryptoKeys/k/cryptoKeyVersions/x",
            "projects/p/locations/us-east1/keyRings/kr/other/k",
            "projects/p/locations/US-EAST1/keyRings/kr",
        ] {
            assert!(ResourceName::parse(s).is_err(), "{s}");
        }
        assert!(!valid_id(&"a".repeat(64)));
        assert!(valid_id(&"a".repeat(63)));
    }
}

/// Names persist as their string form.
macro_rules! string_serde {
    ($t:ty, $parse:expr) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn parse_key_ring(s: &str) -> Result<KeyRingName, KmsError> {
    match ResourceName::parse(s)? {
        ResourceName::KeyRing(k) => Ok(k),
        _ => Err(KmsError::InvalidArgument(format!("\"{s}\" is not a KeyRing name."))),
    }
}

string_serde!(KeyRingName, parse_key_ring);
string_serde!(CryptoKeyName, ResourceName::parse_key);
string_serde!(VersionName, ResourceName::parse_version);
string_serde!(ImportJobName, ResourceName::parse_import_job);
