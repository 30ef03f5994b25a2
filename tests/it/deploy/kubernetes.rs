//! `deploy/kubernetes/herald.yaml` read against herald itself: the container's environment is
//! flags `herald serve` accepts, the probes reach `/readyz` and `/healthz` on the port herald
//! listens on, the grace period outlasts the drain, and the PodDisruptionBudget and the
//! Service select the Deployment's pods.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use herald::config::{ServeArgs, Settings};
use serde_json::Value;

const MANIFEST: &str = include_str!("../../../deploy/kubernetes/herald.yaml");

/// `herald serve`'s flags, as the binary reads them.
#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

fn objects() -> Vec<Value> {
    serde_saphyr::from_multiple(MANIFEST).expect("herald.yaml is YAML")
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objects.iter().filter(|object| object["kind"] == kind);
    let one = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    one
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container, herald");
    &containers[0]
}

/// The container port a probe or a Service names, by name or by number.
fn container_port(container: &Value, port: &Value) -> u64 {
    let ports = container["ports"].as_array().expect("ports");
    let found = match port {
        Value::String(name) => ports.iter().find(|p| p["name"] == name.as_str()),
        Value::Number(_) => ports.iter().find(|p| p["containerPort"] == *port),
        other => panic!("a port is a name or a number, not {other}"),
    };
    found
        .unwrap_or_else(|| panic!("the container has no port {port}"))
        .get("containerPort")
        .and_then(Value::as_u64)
        .expect("containerPort")
}

/// The settings `herald serve` makes of the container's environment: each `HERALD_<FLAG>` given
/// as the flag it is read for (a Secret's value as a stand-in), so a misspelt name or a bad
/// value fails here.
fn settings_of(container: &Value) -> Settings {
    let mut argv = vec!["herald".to_owned()];
    for variable in container["env"].as_array().expect("env") {
        let name = variable["name"].as_str().expect("name");
        let flag = name
            .strip_prefix("HERALD_")
            .unwrap_or_else(|| panic!("{name} is not a herald setting"))
            .to_ascii_lowercase()
            .replace('_', "-");
        let value = match variable["value"].as_str() {
            Some(value) => value.to_owned(),
            None => {
                assert!(
                    variable["valueFrom"]["secretKeyRef"]["key"].is_string(),
                    "{name}: a value or a Secret's key"
                );
                "a-secret-from-kubernetes-0123456789abcdef".to_owned()
            }
        };
        argv.push(format!("--{flag}={value}"));
    }
    let serve = Serve::try_parse_from(&argv).unwrap_or_else(|error| panic!("{argv:?}: {error}"));
    serve
        .args
        .into_settings()
        .unwrap_or_else(|error| panic!("{argv:?}: {error}"))
}

#[test]
fn the_probes_ask_readyz_and_healthz_on_the_port_herald_listens_on() {
    let objects = objects();
    let deployment = the(&objects, "Deployment");
    let container = container(deployment);
    assert_eq!(container["image"], "herald:latest");
    let settings = settings_of(container);
    assert_eq!(settings.listen.port(), 3000);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            container_port(container, &get["port"]),
            u64::from(settings.listen.port()),
            "{probe}"
        );
    }
}

#[test]
fn the_grace_period_outlasts_the_pause_before_sigterm_and_the_whole_drain() {
    let objects = objects();
    let deployment = the(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    let pause = Duration::from_secs(
        container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0),
    );
    let drain = settings_of(container(deployment)).shutdown_timeout;
    let default = Settings::new("127.0.0.1:0".parse().unwrap(), ".".into()).shutdown_timeout;
    assert!(drain >= default, "{drain:?} below the default {default:?}");
    assert!(
        grace > pause + drain,
        "Kubernetes kills the pod {grace:?} after it starts stopping it: before the {pause:?} \
         pause and the {drain:?} drain are over"
    );
}

#[test]
fn the_state_lives_on_a_volume_and_one_replica_writes_it_unless_redis_holds_it() {
    let objects = objects();
    let deployment = the(&objects, "Deployment");
    let container = container(deployment);
    let settings = settings_of(container);
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|mount| {
            mount["mountPath"].as_str().map(PathBuf::from) == Some(settings.data_dir.clone())
        })
        .unwrap_or_else(|| panic!("nothing mounted at {:?}", settings.data_dir));
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .expect("the mounted volume");
    let claim = &volume["persistentVolumeClaim"]["claimName"];
    assert_eq!(
        &the(&objects, "PersistentVolumeClaim")["metadata"]["name"],
        claim
    );

    if settings.redis.is_none() {
        assert_eq!(deployment["spec"]["replicas"], 1, "SQLite has one writer");
        assert_eq!(
            deployment["spec"]["strategy"]["type"], "Recreate",
            "an update must stop the writer before starting the next"
        );
    }
}

#[test]
fn it_runs_as_a_user_on_a_read_only_root_without_privileges() {
    let objects = objects();
    let deployment = the(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert!(pod["runAsUser"].as_u64().is_some_and(|uid| uid > 0));
    let container = &container(deployment)["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(
        container["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
}

#[test]
fn the_disruption_budget_and_the_service_select_the_deployments_pods() {
    let objects = objects();
    let deployment = the(&objects, "Deployment");
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    let selects_the_pods = |selector: &Value| {
        let selector = selector.as_object().expect("a label selector");
        !selector.is_empty()
            && selector
                .iter()
                .all(|(key, value)| pod_labels.get(key) == Some(value))
    };
    assert!(selects_the_pods(
        &deployment["spec"]["selector"]["matchLabels"]
    ));
    let budget = the(&objects, "PodDisruptionBudget");
    assert!(selects_the_pods(&budget["spec"]["selector"]["matchLabels"]));
    assert!(
        budget["spec"]["maxUnavailable"].as_u64() >= Some(1),
        "with one replica, a budget that allows no eviction blocks every node drain"
    );

    let service = the(&objects, "Service");
    assert!(selects_the_pods(&service["spec"]["selector"]));
    let listen = settings_of(container(deployment)).listen.port();
    for port in service["spec"]["ports"].as_array().expect("ports") {
        assert_eq!(
            container_port(container(deployment), &port["targetPort"]),
            u64::from(listen)
        );
    }
}
