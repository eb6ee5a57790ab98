//! `unbaked run`: who may launch which workload (`[launch]`), decided here;
//! the plan and the preparation are the container platform's.

use super::deny::policy_refusal;
use super::{Broker, Ctx, ServiceError};
use crate::request::Refusal;
use crate::rules::DenyRule;
use unbaked_api::wire::{LaunchPlan, LaunchRequest};
use unbaked_policy::{Policy, PolicySet};

impl Broker {
    /// `unbaked run`: check `[launch]`, then the platform plans the
    /// arguments and (unless a dry run) prepares the container's network
    /// and secrets.
    pub async fn launch(&self, ctx: &Ctx, req: LaunchRequest) -> Result<LaunchPlan, ServiceError> {
        let set = self.policies();
        let policy = self.launch_policy(ctx, &set, req.workload.as_deref())?;
        self.platform.launch(self, ctx, policy, req).await
    }

    /// The workload to launch: the one asked for, or the only one the
    /// caller may launch; `[launch]` checked.
    fn launch_policy<'p>(
        &self,
        ctx: &Ctx,
        set: &'p PolicySet,
        asked: Option<&str>,
    ) -> Result<&'p Policy, ServiceError> {
        let policy = match asked {
            Some(w) => {
                self.check_name(ctx, w)?;
                set.get(w).ok_or_else(|| {
                    self.deny(
                        ctx,
                        w,
                        Refusal::new(DenyRule::WorkloadUnknown, format!("no policy for workload {w:?}: check the name, or add a policy file with workload = {w:?}")),
                    )
                })?
            }
            None => {
                let mine: Vec<&Policy> = set
                    .iter()
                    .filter(|p| p.may_launch(&ctx.caller).is_ok())
                    .collect();
                match mine.as_slice() {
                    [one] => *one,
                    [] => return Err(self.deny(ctx, "", Refusal::new(DenyRule::LaunchUids, format!("uid {} may launch no workload: give --workload NAME and add the uid to its [launch]", ctx.caller.uid)))),
                    many => return Err(ServiceError::BadRequest(format!(
                        "uid {} may launch several workloads ({}): choose one with --workload NAME",
                        ctx.caller.uid,
                        many.iter().map(|p| p.workload.as_str()).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        };
        policy.may_launch(&ctx.caller).map_err(|d| {
            self.deny(
                ctx,
                &policy.workload,
                policy_refusal(d, ctx, &policy.workload),
            )
        })?;
        Ok(policy)
    }
}
