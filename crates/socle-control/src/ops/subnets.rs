//! Subnets of Nets.

use std::sync::Arc;

use socle_types::error::ErrorCode;
use socle_types::osc::*;
use socle_types::ApiError;

use crate::{Caller, Cloud};

fn not_yet(op: &str) -> ApiError {
    ApiError::new(ErrorCode::NoSuchOperation, format!("{op} is not implemented by this Socle yet"))
}

pub async fn create_subnet(_: &Arc<Cloud>, _: &Caller, _: CreateSubnetRequest) -> Result<CreateSubnetResponse, ApiError> {
    Err(not_yet("CreateSubnet"))
}

pub async fn read_subnets(_: &Arc<Cloud>, _: &Caller, _: ReadSubnetsRequest) -> Result<ReadSubnetsResponse, ApiError> {
    Err(not_yet("ReadSubnets"))
}

pub async fn update_subnet(_: &Arc<Cloud>, _: &Caller, _: UpdateSubnetRequest) -> Result<UpdateSubnetResponse, ApiError> {
    Err(not_yet("UpdateSubnet"))
}

pub async fn delete_subnet(_: &Arc<Cloud>, _: &Caller, _: DeleteSubnetRequest) -> Result<DeleteSubnetResponse, ApiError> {
    Err(not_yet("DeleteSubnet"))
}
