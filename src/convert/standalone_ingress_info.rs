//! `StandaloneIngressInfo` (16): the run's ingress addresses, `{"<port>": "<address>"}`, merged key by key. An
//! empty map writes nothing.

use std::collections::BTreeMap;

use crate::changes::RowChanges;
use crate::proto::armadaevents::StandaloneIngressInfo;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &StandaloneIngressInfo, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "standaloneIngressInfo") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "standaloneIngressInfo") else { return };
    let mut addresses = BTreeMap::new();
    for entry in &e.ingress_addresses {
        let address = ctx.fx.fit(&entry.value, None, "job_run.ingress_addresses");
        addresses.insert(entry.key.to_string(), address);
    }
    if !addresses.is_empty() {
        out.run(&run_id, &job_id).ingress(addresses, ctx.id);
    }
}
