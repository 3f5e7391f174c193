//! Security groups and their rules (to be written: see the networking issue).

use std::sync::Arc;

use socle_types::error::ErrorCode;
use socle_types::osc::*;
use socle_types::ApiError;

use crate::{Caller, Cloud};

fn not_yet(op: &str) -> ApiError {
    ApiError::new(ErrorCode::NoSuchOperation, format!("{op} is not implemented by this Socle yet"))
}

pub async fn create_security_group(_: &Arc<Cloud>, _: &Caller, _: CreateSecurityGroupRequest) -> Result<CreateSecurityGroupResponse, ApiError> {
    Err(not_yet("CreateSecurityGroup"))
}
pub async fn read_security_groups(_: &Arc<Cloud>, _: &Caller, _: ReadSecurityGroupsRequest) -> Result<ReadSecurityGroupsResponse, ApiError> {
    Err(not_yet("ReadSecurityGroups"))
}
pub async fn delete_security_group(_: &Arc<Cloud>, _: &Caller, _: DeleteSecurityGroupRequest) -> Result<DeleteSecurityGroupResponse, ApiError> {
    Err(not_yet("DeleteSecurityGroup"))
}
pub async fn create_security_group_rule(_: &Arc<Cloud>, _: &Caller, _: CreateSecurityGroupRuleRequest) -> Result<CreateSecurityGroupRuleResponse, ApiError> {
    Err(not_yet("CreateSecurityGroupRule"))
}
pub async fn delete_security_group_rule(_: &Arc<Cloud>, _: &Caller, _: DeleteSecurityGroupRuleRequest) -> Result<DeleteSecurityGroupRuleResponse, ApiError> {
    Err(not_yet("DeleteSecurityGroupRule"))
}
