//! What the cloud offers: regions, subregions, VM types.

use std::sync::Arc;

use socle_types::osc::*;
use socle_types::vm_type::catalogue;
use socle_types::ApiError;

use crate::paging::{matches, paginate, reject_unsupported_filters};
use crate::{Caller, Cloud};

pub async fn read_regions(cloud: &Arc<Cloud>, _req: ReadRegionsRequest) -> Result<ReadRegionsResponse, ApiError> {
    let endpoint = cloud.config.endpoint.trim_end_matches("/api/v1").to_string();
    Ok(ReadRegionsResponse {
        regions: Some(vec![Region { region_name: Some(cloud.config.region.clone()), endpoint: Some(endpoint) }]),
        ..Default::default()
    })
}

pub async fn read_subregions(
    cloud: &Arc<Cloud>,
    _caller: &Caller,
    req: ReadSubregionsRequest,
) -> Result<ReadSubregionsResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["RegionNames", "States", "SubregionNames"])?;
    let f = req.filters.unwrap_or_default();
    let region = &cloud.config.region;
    // The subregions where a VM can be placed now: those with a ready host.
    let schedulable = cloud.store.read(|c| socle_store::hosts::subregions(c, true)).await?;
    let items: Vec<Subregion> = schedulable
        .into_iter()
        .filter(|s| matches(&f.subregion_names, s) && matches(&f.region_names, region) && matches(&f.states, "available"))
        .map(|s| Subregion {
            location_code: Some(s.clone()),
            region_name: Some(region.clone()),
            state: Some("available".into()),
            subregion_name: Some(s),
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |s| {
        s.subregion_name.clone().unwrap_or_default()
    })?;
    Ok(ReadSubregionsResponse { subregions: Some(page), next_page_token: next, ..Default::default() })
}

pub async fn read_vm_types(_cloud: &Arc<Cloud>, req: ReadVmTypesRequest) -> Result<ReadVmTypesResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["VmTypeNames", "VcoreCounts", "MemorySizes"])?;
    let f = req.filters.unwrap_or_default();
    let items: Vec<VmType> = catalogue()
        .into_iter()
        .filter(|(name, shape)| {
            matches(&f.vm_type_names, name)
                && matches(&f.vcore_counts, &i64::from(shape.vcpus))
                && f.memory_sizes.as_ref().is_none_or(|m| m.contains(&(shape.memory_mib as f64 / 1024.0)))
        })
        .map(|(name, shape)| VmType {
            vm_type_name: Some(name),
            vcore_count: Some(i64::from(shape.vcpus)),
            memory_size: Some(shape.memory_mib as f64 / 1024.0),
            bsu_optimized: Some(false),
            max_private_ips: Some(1),
            eth: Some(1),
            gpu: Some(0),
            ..Default::default()
        })
        .collect();
    // The catalogue's order is meaningful (aliases first); page over its index.
    let indexed: Vec<(usize, VmType)> = items.into_iter().enumerate().collect();
    let (page, next) = paginate(indexed, req.next_page_token.as_deref(), req.results_per_page, |(i, _)| {
        format!("{i:06}")
    })?;
    Ok(ReadVmTypesResponse {
        vm_types: Some(page.into_iter().map(|(_, t)| t).collect()),
        next_page_token: next,
        ..Default::default()
    })
}
