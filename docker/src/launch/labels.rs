//! The labels concern of the plan. A container's labels decide which
//! workloads' `[match] docker_labels` select it, so a launched container
//! carries its own workload's labels and nothing that selects another.

use super::flags::Flag;
use super::plan::Planner;
use super::LABEL_PREFIX;
use std::collections::BTreeMap;

impl Planner<'_> {
    pub(super) fn label(&mut self, flag: Flag, v: &str) -> bool {
        let w = self.workload().to_string();
        if flag == Flag::LabelFile {
            // The docker CLI reads the file as the user; the broker cannot
            // see the same bytes (nor should it open a path the user names).
            self.refuse(
                "launch.label_file",
                format!("--label-file {v}: unbaked run cannot vet labels it does not see: give them as --label KEY=VALUE"),
            );
            return false;
        }
        let (k, val) = v.split_once('=').unwrap_or((v, ""));
        if k.starts_with(LABEL_PREFIX) {
            self.refuse(
                "launch.label",
                format!("--label {k}: labels under {LABEL_PREFIX} are set by unbaked run: drop it"),
            );
        } else if let Some(want) = self.inputs.policy.matcher.docker_labels.get(k) {
            if want != val {
                self.refuse(
                    "launch.label",
                    format!("--label {k} differs from the value [match] docker_labels of workload {w:?} requires, which unbaked run sets itself: drop it"),
                );
            }
        }
        self.labels.insert(k.to_string(), val.to_string());
        true
    }

    /// The labels the container will carry: the image's, then the user's,
    /// then the workload's own selector (docker: the last one given wins).
    fn final_labels(&self) -> BTreeMap<&str, (&str, bool)> {
        let own = &self.inputs.policy.matcher.docker_labels;
        let mut all = BTreeMap::new();
        for (k, v) in self.inputs.host.image_labels.iter().chain(&self.labels) {
            all.insert(k.as_str(), (v.as_str(), true));
        }
        for (k, v) in own {
            all.insert(k.as_str(), (v.as_str(), false));
        }
        all
    }

    /// No other workload's `docker_labels` selector may hold on the
    /// container's final labels. The caller learns which of its labels to
    /// drop, never the other workload; the operator's log gets that.
    pub(super) fn no_other_workload_matches(&mut self) {
        let w = self.workload().to_string();
        let all = self.final_labels();
        let mut found = Vec::new();
        for other in self.inputs.policies.iter().filter(|p| p.workload != w) {
            let sel = &other.matcher.docker_labels;
            if sel.is_empty()
                || !sel
                    .iter()
                    .all(|(k, v)| all.get(k.as_str()).is_some_and(|x| x.0 == v))
            {
                continue;
            }
            let theirs: Vec<&str> = sel
                .keys()
                .map(String::as_str)
                .filter(|k| all.get(k).is_some_and(|x| x.1))
                .collect();
            let reason = if theirs.is_empty() {
                format!("the labels workload {w:?} is launched with ([match] docker_labels) also match another workload's selector: the policies overlap; make their docker_labels selectors disjoint")
            } else {
                format!("the labels {theirs:?} (from --label or the image) would make the container match another workload's [match] docker_labels selector: drop them")
            };
            let detail = format!(
                "would match workload {:?} ({})",
                other.workload,
                other.source.display()
            );
            found.push((reason, detail));
        }
        for (reason, detail) in found {
            let mut r = super::parse::refusal("launch.other_workload", reason);
            r.detail = Some(detail);
            self.refused.push(r);
        }
    }
}
