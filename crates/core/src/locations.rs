//! The location catalog shared by the KMS (key ring locations) and storage (bucket
//! locations). CMEK's location rule compares entries of this one table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    Region,
    DualRegion,
    MultiRegion,
    Global,
}

#[derive(Debug, Clone, Copy)]
pub struct Location {
    /// Lower-case id as Cloud KMS spells it (`us-east1`, `nam4`, `us`, `global`).
    pub id: &'static str,
    pub kind: LocationKind,
    pub display_name: &'static str,
    /// For regions: the multi-region that contains them. For predefined dual-regions:
    /// the multi-region their two regions belong to.
    pub multi_region: Option<&'static str>,
    /// For predefined dual-regions: the two regions.
    pub regions: &'static [&'static str],
}

const fn region(id: &'static str, display_name: &'static str, multi: Option<&'static str>) -> Location {
    Location {
        id,
        kind: LocationKind::Region,
        display_name,
        multi_region: multi,
        regions: &[],
    }
}

pub const CATALOG: &[Location] = &[
    region("us-central1", "Iowa", Some("us")),
    region("us-east1", "South Carolina", Some("us")),
    region("us-east4", "Northern Virginia", Some("us")),
    region("us-east5", "Columbus", Some("us")),
    region("us-south1", "Dallas", Some("us")),
    region("us-west1", "Oregon", Some("us")),
    region("us-west2", "Los Angeles", Some("us")),
    region("us-west3", "Salt Lake City", Some("us")),
    region("us-west4", "Las Vegas", Some("us")),
    region("northamerica-northeast1", "Montréal", None),
    region("northamerica-northeast2", "Toronto", None),
    region("southamerica-east1", "São Paulo", None),
    region("europe-central2", "Warsaw", Some("eu")),
    region("europe-north1", "Finland", Some("eu")),
    region("europe-southwest1", "Madrid", Some("eu")),
    region("europe-west1", "Belgium", Some("eu")),
    region("europe-west3", "Frankfurt", Some("eu")),
    region("europe-west4", "Netherlands", Some("eu")),
    region("europe-west6", "Zurich", None),
    region("europe-west8", "Milan", Some("eu")),
    region("europe-west9", "Paris", Some("eu")),
    region("europe-west2", "London", None),
    region("asia-east1", "Taiwan", Some("asia")),
    region("asia-east2", "Hong Kong", Some("asia")),
    region("asia-northeast1", "Tokyo", Some("asia")),
    region("asia-northeast2", "Osaka", Some("asia")),
    region("asia-northeast3", "Seoul", Some("asia")),
    region("asia-south1", "Mumbai", Some("asia")),
    region("asia-southeast1", "Singapore", Some("asia")),
    region("australia-southeast1", "Sydney", None),
    Location {
        id: "us",
        kind: LocationKind::MultiRegion,
        display_name: "United States",
        multi_region: None,
        regions: &[],
    },
    Location {
        id: "eu",
        kind: LocationKind::MultiRegion,
        display_name: "European Union",
        multi_region: None,
        regions: &[],
    },
    Location {
        id: "asia",
        kind: LocationKind::MultiRegion,
        display_name: "Asia",
        multi_region: None,
        regions: &[],
    },
    Location {
        id: "nam4",
        kind: LocationKind::DualRegion,
        display_name: "Iowa and South Carolina",
        multi_region: Some("us"),
        regions: &["us-central1", "us-east1"],
    },
    Location {
        id: "eur4",
        kind: LocationKind::DualRegion,
        display_name: "Netherlands and Finland",
        multi_region: Some("eu"),
        regions: &["europe-north1", "europe-west4"],
    },
    Location {
        id: "asia1",
        kind: LocationKind::DualRegion,
        display_name: "Tokyo and Osaka",
        multi_region: Some("asia"),
        regions: &["asia-northeast1", "asia-northeast2"],
    },
    Location {
        id: "global",
        kind: LocationKind::Global,
        display_name: "Global",
        multi_region: None,
        regions: &[],
    },
];

/// Looks a location up case-insensitively (GCS spells them upper-case).
pub fn find(id: &str) -> Option<&'static Location> {
    CATALOG.iter().find(|l| l.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lookup_is_case_insensitive_and_consistent() {
        assert_eq!(find("US-EAST1").unwrap().kind, LocationKind::Region);
        assert_eq!(find("nam4").unwrap().regions, &["us-central1", "us-east1"]);
        assert!(find("mars-north1").is_none());
        for loc in CATALOG {
            for r in loc.regions {
                assert_eq!(find(r).unwrap().multi_region, loc.multi_region, "{}", loc.id);
            }
        }
    }
}
