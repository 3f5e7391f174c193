//! Nets (private networks).

use std::sync::Arc;

use socle_types::error::ErrorCode;
use socle_types::osc::*;
use socle_types::ApiError;

use crate::{Caller, Cloud};

fn not_yet(op: &str) -> ApiError {
    ApiError::new(ErrorCode::NoSuchOperation, format!("{op} is not implemented by this Socle yet"))
}

pub async fn create_net(_: &Arc<Cloud>, _: &Caller, _: CreateNetRequest) -> Result<CreateNetResponse, ApiError> {
    Err(not_yet("CreateNet"))
}

pub async fn read_nets(_: &Arc<Cloud>, _: &Caller, _: ReadNetsRequest) -> Result<ReadNetsResponse, ApiError> {
    Err(not_yet("ReadNets"))
}

pub async fn update_net(_: &Arc<Cloud>, _: &Caller, _: UpdateNetRequest) -> Result<UpdateNetResponse, ApiError> {
    Err(not_yet("UpdateNet"))
}

pub async fn delete_net(_: &Arc<Cloud>, _: &Caller, _: DeleteNetRequest) -> Result<DeleteNetResponse, ApiError> {
    Err(not_yet("DeleteNet"))
}
