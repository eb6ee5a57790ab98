//! Docker events: when a container dies (or is removed), its leases end,
//! audited, and its secrets tmpfs is wiped and unmounted.
//!
//! The stream is followed for the broker's life, reconnecting with a pause
//! when the engine goes away; after each (re)connection the followed
//! containers are reconciled against the engine, so a death missed while
//! disconnected is still acted on.

use crate::containers::Containers;
use crate::launch::LABEL_LAUNCH;
use crate::renewals::reconcile;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use unbaked_broker::platform::Core;

const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// What an event means for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The container stopped: end what it held.
    Gone {
        id: String,
        launch: Option<String>,
        why: String,
    },
    Ignore,
}

/// Pure: an engine event → what to do.
pub fn classify(m: &EventMessage) -> Action {
    if m.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return Action::Ignore;
    }
    let action = m.action.as_deref().unwrap_or("");
    if !matches!(action, "die" | "destroy") {
        return Action::Ignore;
    }
    let Some(actor) = &m.actor else {
        return Action::Ignore;
    };
    let Some(id) = actor.id.clone().filter(|i| !i.is_empty()) else {
        return Action::Ignore;
    };
    let attrs = actor.attributes.as_ref();
    let launch = attrs.and_then(|a| a.get(LABEL_LAUNCH)).cloned();
    let why = match (action, attrs.and_then(|a| a.get("exitCode"))) {
        ("die", Some(code)) => format!("the container died (exit code {code})"),
        ("die", None) => "the container died".to_string(),
        _ => "the container was removed".to_string(),
    };
    Action::Gone { id, launch, why }
}

/// Follow the engine's container events until the task is dropped.
pub async fn follow(core: Arc<dyn Core>, containers: Arc<Containers>) {
    let mut warned = false;
    loop {
        let client = match containers.engine.client().await {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "not following Docker events yet: retrying");
                    warned = true;
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        warned = false;
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["die", "destroy"]),
        ]);
        let mut stream = client.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
        tracing::info!(
            engine = containers.engine.socket(),
            "following Docker events"
        );
        reconcile(&*core, &containers).await;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(m) => {
                    if let Action::Gone { id, launch, why } = classify(&m) {
                        containers.container_gone(&*core, &id, launch.as_deref(), &why);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Docker event stream broke: reconnecting");
                    break;
                }
            }
        }
        containers.engine.reset();
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(typ: EventMessageTypeEnum, action: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc123".into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..EventMessage::default()
        }
    }

    #[test]
    fn deaths_and_removals_end_a_container() {
        let die = event(
            EventMessageTypeEnum::CONTAINER,
            "die",
            &[("exitCode", "3"), (LABEL_LAUNCH, "l1")],
        );
        assert_eq!(
            classify(&die),
            Action::Gone {
                id: "abc123".into(),
                launch: Some("l1".into()),
                why: "the container died (exit code 3)".into()
            }
        );
        let destroy = event(EventMessageTypeEnum::CONTAINER, "destroy", &[]);
        assert!(matches!(
            classify(&destroy),
            Action::Gone { launch: None, .. }
        ));
    }

    #[test]
    fn other_events_are_ignored() {
        for (t, a) in [
            (EventMessageTypeEnum::CONTAINER, "start"),
            (EventMessageTypeEnum::CONTAINER, "kill"),
            (EventMessageTypeEnum::CONTAINER, "oom"),
            (EventMessageTypeEnum::CONTAINER, "exec_start: sh"),
            (EventMessageTypeEnum::NETWORK, "destroy"),
        ] {
            assert_eq!(classify(&event(t, a, &[])), Action::Ignore, "{a}");
        }
        let mut no_actor = event(EventMessageTypeEnum::CONTAINER, "die", &[]);
        no_actor.actor = None;
        assert_eq!(classify(&no_actor), Action::Ignore);
    }
}
