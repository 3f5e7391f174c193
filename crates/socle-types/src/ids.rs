//! Typed resource IDs. Each kind has its own type so a `VmId` can never be
//! passed where an `ImageId` is expected. The textual form follows Outscale:
//! a prefix, a dash and 8 lowercase hex digits (`i-0a1b2c3d`).

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ApiError;

macro_rules! resource_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// What the resource is called in error messages.
            pub const WHAT: &'static str = $what;

            /// A fresh random ID. Uniqueness is enforced by the database's
            /// primary key; callers retry on the (rare) collision.
            pub fn generate() -> Self {
                let n: u32 = rand::thread_rng().gen();
                Self(format!("{}-{:08x}", $prefix, n))
            }

            /// Parses an ID given by a user: wrong prefix or shape is an
            /// `InvalidParameterValue` error that reveals nothing about
            /// which IDs exist.
            pub fn parse(s: &str) -> Result<Self, ApiError> {
                match s.strip_prefix(concat!($prefix, "-")) {
                    Some(hex)
                        if hex.len() == 8
                            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
                    {
                        Ok(Self(s.to_string()))
                    }
                    Some(_) => Err(ApiError::malformed_id($what, s)),
                    None => Err(ApiError::invalid_id_prefix($what, $prefix, s)),
                }
            }

            /// Wraps an ID read back from our own database.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

resource_id!(/// A virtual machine.
    VmId, "i", "VM");
resource_id!(/// A machine image (OMI).
    ImageId, "ami", "image");
resource_id!(/// An SSH keypair.
    KeypairId, "key", "keypair");
resource_id!(/// A block volume.
    VolumeId, "vol", "volume");
resource_id!(/// A volume snapshot.
    SnapshotId, "snap", "snapshot");
resource_id!(/// The reservation that groups the VMs of one `CreateVms` call.
    ReservationId, "r", "reservation");
resource_id!(/// A Net (a private network, like a VPC).
    NetId, "vpc", "Net");
resource_id!(/// A subnet of a Net.
    SubnetId, "subnet", "subnet");
resource_id!(/// A security group.
    SecurityGroupId, "sg", "security group");
resource_id!(/// A rule of a security group.
    SecurityGroupRuleId, "sgr", "security group rule");
resource_id!(/// A network interface card (a VM's port on a subnet).
    NicId, "eni", "NIC");
resource_id!(/// The link of a NIC to a VM.
    LinkNicId, "eni-attach", "NIC link");
resource_id!(/// An internet service (internet gateway) of a Net.
    InternetServiceId, "igw", "internet service");
resource_id!(/// A route table of a Net.
    RouteTableId, "rtb", "route table");
resource_id!(/// The link of a route table to a subnet (or the main link of a Net).
    LinkRouteTableId, "rtbassoc", "route table link");
resource_id!(/// A public IP allocated to an account from the operator's pool.
    PublicIpId, "eipalloc", "public IP");
resource_id!(/// The link of a public IP to a NIC.
    LinkPublicIpId, "eipassoc", "public IP link");
resource_id!(/// A NAT service (NAT gateway) of a Net.
    NatServiceId, "nat", "NAT service");
resource_id!(/// A host of the cloud: a machine whose agent the control plane drives.
    HostId, "h", "host");
resource_id!(/// A one-time token with which a host joins the cloud.
    JoinTokenId, "jt", "join token");

/// An account: 12 decimal digits, as on Outscale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    pub fn generate() -> Self {
        let n: u64 = rand::thread_rng().gen_range(100_000_000_000..1_000_000_000_000);
        Self(n.to_string())
    }
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An access key ID: 20 uppercase alphanumerics, as on Outscale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessKeyId(String);

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl AccessKeyId {
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        Self((0..20).map(|_| KEY_ALPHABET[rng.gen_range(0..KEY_ALPHABET.len())] as char).collect())
    }
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh 40-character secret key (letters and digits, ~238 bits).
pub fn generate_secret_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..40).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = VmId::generate();
        assert_eq!(VmId::parse(id.as_str()).unwrap(), id);
        assert!(id.as_str().starts_with("i-") && id.as_str().len() == 10);
    }

    #[test]
    fn bad_ids_are_rejected_with_the_right_code() {
        assert_eq!(VmId::parse("ami-12345678").unwrap_err().code(), "4104");
        assert_eq!(VmId::parse("i-1234").unwrap_err().code(), "4105");
        assert_eq!(VmId::parse("i-1234567G").unwrap_err().code(), "4105");
        assert_eq!(VmId::parse("i-ABCDEF12").unwrap_err().code(), "4105");
    }

    #[test]
    fn account_and_keys_have_outscale_shapes() {
        assert_eq!(AccountId::generate().as_str().len(), 12);
        assert_eq!(AccessKeyId::generate().as_str().len(), 20);
        assert_eq!(generate_secret_key().len(), 40);
    }
}
