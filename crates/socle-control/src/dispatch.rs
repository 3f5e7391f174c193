//! From an operation name and a JSON body to a typed handler and back.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use socle_types::error::ErrorCode;
use socle_types::osc::ALL_OPERATIONS;
use socle_types::ApiError;

use crate::ops;
use crate::{Caller, Cloud};

/// Turns serde's message into the OSC error a client expects, without the
/// "at line 1 column 42" noise.
pub fn parse_request<T: DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        let code = if msg.starts_with("unknown field") {
            ErrorCode::InvalidParameter
        } else if msg.starts_with("missing field") {
            ErrorCode::MissingParameter
        } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
            ErrorCode::InvalidParameterType
        } else {
            ErrorCode::InvalidParameterValue
        };
        // serde says "field"; OSC users think in "parameters".
        ApiError::new(code, msg.replacen("field", "parameter", 1))
    })
}

fn to_json<T: Serialize>(v: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

fn require(caller: Option<&Caller>) -> Result<&Caller, ApiError> {
    // The HTTP layer only passes None for anonymous operations; this guards
    // against a routing mistake ever running a scoped operation unscoped.
    caller.ok_or_else(|| ApiError::new(ErrorCode::AccessDenied, "this operation requires a signed request"))
}

macro_rules! operations {
    ($cloud:ident, $caller:ident, $op:ident, $body:ident;
     anonymous { $($aname:literal => $ahandler:path),* $(,)? }
     scoped { $($name:literal => $handler:path),* $(,)? }) => {
        match $op {
            $($aname => to_json($ahandler($cloud, parse_request($body)?).await?),)*
            $($name => to_json($handler($cloud, require($caller)?, parse_request($body)?).await?),)*
            other if ALL_OPERATIONS.contains(&other) => Err(ApiError::new(
                ErrorCode::NoSuchOperation,
                format!("the operation {other} is part of the OSC API but not implemented by this Socle version"),
            )),
            other => Err(ApiError::new(ErrorCode::NoSuchOperation, format!("there is no operation named {other:?}"))),
        }
    };
}

pub async fn call(
    cloud: &Arc<Cloud>,
    caller: Option<&Caller>,
    op: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    operations!(cloud, caller, op, body;
        anonymous {
            "ReadRegions" => ops::catalog::read_regions,
            "ReadVmTypes" => ops::catalog::read_vm_types,
            "ReadPublicIpRanges" => ops::public_ips::read_public_ip_ranges,
        }
        scoped {
            "ReadSubregions" => ops::catalog::read_subregions,
            "ReadImages" => ops::images::read_images,
            "CreateKeypair" => ops::keypairs::create_keypair,
            "ReadKeypairs" => ops::keypairs::read_keypairs,
            "DeleteKeypair" => ops::keypairs::delete_keypair,
            "CreateTags" => ops::tags::create_tags,
            "ReadTags" => ops::tags::read_tags,
            "DeleteTags" => ops::tags::delete_tags,
            "CreateAccessKey" => ops::access_keys::create_access_key,
            "ReadAccessKeys" => ops::access_keys::read_access_keys,
            "UpdateAccessKey" => ops::access_keys::update_access_key,
            "DeleteAccessKey" => ops::access_keys::delete_access_key,
            "ReadQuotas" => ops::quotas::read_quotas,
            "CreateVms" => ops::vms::create_vms,
            "ReadVms" => ops::vms::read_vms,
            "ReadVmsState" => ops::vms::read_vms_state,
            "StartVms" => ops::vm_lifecycle::start_vms,
            "StopVms" => ops::vm_lifecycle::stop_vms,
            "RebootVms" => ops::vm_lifecycle::reboot_vms,
            "DeleteVms" => ops::vm_lifecycle::delete_vms,
            "UpdateVm" => ops::vms::update_vm,
            "ReadConsoleOutput" => ops::vms::read_console_output,
            "CreateVolume" => ops::volumes::create_volume,
            "ReadVolumes" => ops::volumes::read_volumes,
            "UpdateVolume" => ops::volumes::update_volume,
            "LinkVolume" => ops::volumes::link_volume,
            "UnlinkVolume" => ops::volumes::unlink_volume,
            "DeleteVolume" => ops::volumes::delete_volume,
            "CreateSnapshot" => ops::snapshots::create_snapshot,
            "ReadSnapshots" => ops::snapshots::read_snapshots,
            "DeleteSnapshot" => ops::snapshots::delete_snapshot,
            "UpdateSnapshot" => ops::snapshots::update_snapshot,
            "CreateImage" => ops::images::create_image,
            "UpdateImage" => ops::images::update_image,
            "DeleteImage" => ops::images::delete_image,
            "CreateNet" => ops::nets::create_net,
            "ReadNets" => ops::nets::read_nets,
            "UpdateNet" => ops::nets::update_net,
            "DeleteNet" => ops::nets::delete_net,
            "CreateSubnet" => ops::subnets::create_subnet,
            "ReadSubnets" => ops::subnets::read_subnets,
            "UpdateSubnet" => ops::subnets::update_subnet,
            "DeleteSubnet" => ops::subnets::delete_subnet,
            "CreateSecurityGroup" => ops::security_groups::create_security_group,
            "ReadSecurityGroups" => ops::security_groups::read_security_groups,
            "DeleteSecurityGroup" => ops::security_groups::delete_security_group,
            "CreateSecurityGroupRule" => ops::security_groups::create_security_group_rule,
            "DeleteSecurityGroupRule" => ops::security_groups::delete_security_group_rule,
            "CreateInternetService" => ops::internet_services::create_internet_service,
            "ReadInternetServices" => ops::internet_services::read_internet_services,
            "DeleteInternetService" => ops::internet_services::delete_internet_service,
            "LinkInternetService" => ops::internet_services::link_internet_service,
            "UnlinkInternetService" => ops::internet_services::unlink_internet_service,
            "CreateRouteTable" => ops::route_tables::create_route_table,
            "ReadRouteTables" => ops::route_tables::read_route_tables,
            "DeleteRouteTable" => ops::route_tables::delete_route_table,
            "LinkRouteTable" => ops::route_tables::link_route_table,
            "UnlinkRouteTable" => ops::route_tables::unlink_route_table,
            "CreateRoute" => ops::route_tables::create_route,
            "DeleteRoute" => ops::route_tables::delete_route,
            "CreatePublicIp" => ops::public_ips::create_public_ip,
            "ReadPublicIps" => ops::public_ips::read_public_ips,
            "DeletePublicIp" => ops::public_ips::delete_public_ip,
            "LinkPublicIp" => ops::public_ips::link_public_ip,
            "UnlinkPublicIp" => ops::public_ips::unlink_public_ip,
            "CreateNatService" => ops::nat_services::create_nat_service,
            "ReadNatServices" => ops::nat_services::read_nat_services,
            "DeleteNatService" => ops::nat_services::delete_nat_service,
            "CreateNic" => ops::nics::create_nic,
            "ReadNics" => ops::nics::read_nics,
            "UpdateNic" => ops::nics::update_nic,
            "DeleteNic" => ops::nics::delete_nic,
            "LinkNic" => ops::nic_links::link_nic,
            "UnlinkNic" => ops::nic_links::unlink_nic,
            "LinkPrivateIps" => ops::nic_links::link_private_ips,
            "UnlinkPrivateIps" => ops::nic_links::unlink_private_ips,
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use socle_types::osc::CreateKeypairRequest;

    #[test]
    fn serde_errors_map_to_osc_codes() {
        let e = parse_request::<CreateKeypairRequest>(serde_json::json!({})).unwrap_err();
        assert_eq!((e.code(), e.details.as_str()), ("7000", "missing parameter `KeypairName`"));
        let e = parse_request::<CreateKeypairRequest>(serde_json::json!({"KeypairName": "k", "Nope": 1})).unwrap_err();
        assert_eq!(e.code(), "4045");
        assert!(e.details.contains("Nope"), "{}", e.details);
        let e = parse_request::<CreateKeypairRequest>(serde_json::json!({"KeypairName": 5})).unwrap_err();
        assert_eq!(e.code(), "4108");
    }
}
