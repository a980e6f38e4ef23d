//! The status the leader writes to Gateway API objects, made from their reports: conditions
//! with the object's generation (`observedGeneration`) and a transition time that only moves
//! when the condition does; a Gateway's addresses and listeners; and, on a route, this
//! controller's entries among its parents, the entries of other controllers kept as they are.

use serde_json::{Value, json};

use crate::snapshot::listener::{Condition, ObjectReport};

/// The `status` to write to `object` (its JSON as the API server has it), or `None` when it
/// already has it. `now` is the transition time of conditions that change.
pub fn wanted(report: &ObjectReport, object: &Value, controller: &str, now: &str) -> Option<Value> {
    let generation = object["metadata"]["generation"].as_i64();
    let current = &object["status"];
    let conditions = |wanted: &[Condition], had: &Value| -> Value {
        wanted
            .iter()
            .map(|c| condition(c, generation, had, now))
            .collect()
    };
    let status = match report.kind {
        "Gateway" => {
            let listeners: Vec<Value> = report
                .listeners
                .iter()
                .map(|listener| {
                    let had = current["listeners"]
                        .as_array()
                        .and_then(|l| l.iter().find(|l| l["name"] == listener.name.as_str()))
                        .map_or(&Value::Null, |l| &l["conditions"]);
                    let kinds: Vec<Value> = listener
                        .supported_kinds
                        .iter()
                        .map(|kind| json!({"group": crate::gateway_api::GROUP, "kind": kind}))
                        .collect();
                    json!({
                        "name": listener.name,
                        "supportedKinds": kinds,
                        "attachedRoutes": listener.attached_routes,
                        "conditions": conditions(&listener.conditions, had),
                    })
                })
                .collect();
            let addresses: Vec<Value> = report
                .addresses
                .iter()
                .map(|ip| json!({"type": "IPAddress", "value": ip.to_string()}))
                .collect();
            json!({
                "addresses": addresses,
                "conditions": conditions(&report.conditions, &current["conditions"]),
                "listeners": listeners,
            })
        }
        "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" | "UDPRoute" => {
            let theirs = current["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["controllerName"] != controller);
            let had_parents = current["parents"].as_array();
            let ours = report.parents.iter().map(|parent| {
                let parent_ref = serde_json::to_value(&parent.parent_ref).unwrap_or_default();
                let had = had_parents
                    .and_then(|l| {
                        l.iter().find(|p| {
                            p["controllerName"] == controller && p["parentRef"] == parent_ref
                        })
                    })
                    .map_or(&Value::Null, |p| &p["conditions"]);
                json!({
                    "parentRef": parent_ref,
                    "controllerName": controller,
                    "conditions": conditions(&parent.conditions, had),
                })
            });
            json!({ "parents": theirs.cloned().chain(ours).collect::<Vec<_>>() })
        }
        _ => json!({ "conditions": conditions(&report.conditions, &current["conditions"]) }),
    };
    (status != *current).then_some(status)
}

/// One condition as the API has it; its transition time is kept from `had` (the object's
/// current conditions) when its status did not change.
fn condition(wanted: &Condition, generation: Option<i64>, had: &Value, now: &str) -> Value {
    let status = if wanted.status { "True" } else { "False" };
    let previous = had
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == wanted.type_));
    let since = previous
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let mut condition = json!({
        "type": wanted.type_,
        "status": status,
        "reason": wanted.reason,
        "message": wanted.message,
        "lastTransitionTime": since,
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = json!(generation);
    }
    condition
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_api::ParentReference;
    use crate::snapshot::listener::ParentReport;

    fn accepted(status: bool) -> Condition {
        Condition::new(
            "Accepted",
            status,
            if status {
                "Accepted"
            } else {
                "NoMatchingParent"
            },
            "",
        )
    }

    #[test]
    fn unchanged_conditions_keep_their_time_and_nothing_is_rewritten() {
        let report = ObjectReport {
            kind: "GatewayClass",
            name: "xdp".into(),
            conditions: vec![accepted(true)],
            ..ObjectReport::default()
        };
        let object = json!({"metadata": {"name": "xdp", "generation": 3}});
        let status = wanted(&report, &object, "c", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(status["conditions"][0]["observedGeneration"], 3);
        let written = json!({"metadata": {"name": "xdp", "generation": 3}, "status": status});
        assert_eq!(wanted(&report, &written, "c", "2026-02-02T00:00:00Z"), None);
        // A new generation is written again, with the same transition time.
        let newer =
            json!({"metadata": {"name": "xdp", "generation": 4}, "status": written["status"]});
        let status = wanted(&report, &newer, "c", "2026-02-02T00:00:00Z").unwrap();
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(status["conditions"][0]["observedGeneration"], 4);
    }

    #[test]
    fn a_routes_parents_of_other_controllers_are_kept() {
        let parent_ref = ParentReference {
            name: "edge".into(),
            ..ParentReference::default()
        };
        let report = ObjectReport {
            kind: "HTTPRoute",
            name: "shop".into(),
            parents: vec![ParentReport {
                parent_ref,
                conditions: vec![accepted(false)],
            }],
            ..ObjectReport::default()
        };
        let theirs = json!({"parentRef": {"name": "other"}, "controllerName": "example.com/x", "conditions": []});
        let object = json!({"metadata": {"generation": 1}, "status": {"parents": [theirs]}});
        let status = wanted(&report, &object, "xdp-gateway.io/gateway-controller", "t").unwrap();
        let parents = status["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], theirs);
        assert_eq!(
            parents[1]["controllerName"],
            "xdp-gateway.io/gateway-controller"
        );
        assert_eq!(parents[1]["conditions"][0]["reason"], "NoMatchingParent");
        assert_eq!(parents[1]["conditions"][0]["status"], "False");
    }
}
