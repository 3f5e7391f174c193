//! ReadQuotas: the account's compute limits and what it uses of them.

use std::sync::Arc;

use socle_store::{accounts, vms as vm_store};
use socle_types::osc::*;
use socle_types::ApiError;

use crate::paging::{matches, paginate, reject_unsupported_filters};
use crate::{Caller, Cloud};

pub async fn read_quotas(cloud: &Arc<Cloud>, caller: &Caller, req: ReadQuotasRequest) -> Result<ReadQuotasResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["Collections", "QuotaNames", "QuotaTypes", "ShortDescriptions"])?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let (acct, usage, public_ips) = cloud
        .store
        .read(move |conn| -> Result<_, ApiError> {
            let acct = accounts::get(conn, &account)
                ?
                .ok_or_else(|| ApiError::internal("authenticated account has no row"))?;
            let usage = vm_store::usage(conn, &account)?;
            let public_ips = socle_store::public_ips::count_held(conn, &account)?;
            Ok((acct, usage, public_ips))
        })
        .await?;
    let q = |name: &str, short: &str, desc: &str, max: i64, used: i64| Quota {
        account_id: Some(acct.account_id.to_string()),
        name: Some(name.into()),
        short_description: Some(short.into()),
        description: Some(desc.into()),
        quota_collection: Some("Compute".into()),
        max_value: Some(max),
        used_value: Some(used),
    };
    let quotas: Vec<Quota> = vec![
        q("vm_limit", "VM Limit", "Maximum number of VMs (not terminated)", acct.quotas.max_vms, usage.vms),
        q("core_limit", "Core Limit", "Maximum number of vCPUs over all VMs", acct.quotas.max_vcpus, usage.vcpus),
        q(
            "memory_limit",
            "Memory Limit",
            "Maximum memory over all VMs, in GiB",
            acct.quotas.max_memory_mib / 1024,
            (usage.memory_mib + 1023) / 1024,
        ),
        q("public_ip_limit", "Public IP Limit", "Maximum number of public IPs held (CreatePublicIp)", acct.quotas.max_public_ips, public_ips),
    ]
    .into_iter()
    .filter(|x| {
        matches(&f.quota_names, x.name.as_deref().unwrap_or(""))
            && matches(&f.collections, "Compute")
            && matches(&f.short_descriptions, x.short_description.as_deref().unwrap_or(""))
            && matches(&f.quota_types, "global")
    })
    .collect();
    let types = if quotas.is_empty() {
        vec![]
    } else {
        vec![QuotaTypes { quota_type: Some("global".into()), quotas: Some(quotas) }]
    };
    let (page, next) = paginate(types, req.next_page_token.as_deref(), req.results_per_page, |t| {
        t.quota_type.clone().unwrap_or_default()
    })?;
    Ok(ReadQuotasResponse { quota_types: Some(page), next_page_token: next, ..Default::default() })
}
