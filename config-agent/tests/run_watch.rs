//! `config-agent run` in this process against a fake data plane on a Unix socket: a kubelet-style
//! update of the configuration folder and of a referenced secret each lead to a new `Apply`, and
//! `run --once` exits 3 when the data plane reports dataflows it does not run.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use clap::Parser;
use sluice_config_agent::cli::{Cli, EXIT_NOT_RUNNING, main};
use sluice_config_agent::control::{
    AgentMessage, Changes, DataplaneMessage, FrameDecoder, NotRunning, read_message, write_message,
};

/// Every wait of these tests ends by then.
const WAIT: Duration = Duration::from_secs(30);

/// A fake data plane: answers Hello with version 2 and every Apply with Applied (listing
/// `not_running`), and hands each applied generation and snapshot to the test.
fn fake_dataplane(
    socket: &Path,
    not_running: Vec<NotRunning>,
) -> Receiver<(u64, serde_json::Value)> {
    let listener = UnixListener::bind(socket).expect("bind");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let decoder = FrameDecoder::default();
            let Ok(Some(AgentMessage::<serde_json::Value>::Hello { versions, .. })) =
                read_message(&mut stream, &decoder)
            else {
                continue;
            };
            assert!(versions.contains(&2), "{versions:?}");
            let welcome = DataplaneMessage::Welcome {
                version: 2,
                dataplane: "fake".into(),
                generation: None,
            };
            if write_message(&mut stream, &welcome).is_err() {
                continue;
            }
            while let Ok(Some(AgentMessage::Apply {
                generation,
                snapshot,
            })) = read_message::<AgentMessage<serde_json::Value>>(&mut stream, &decoder)
            {
                let applied = DataplaneMessage::Applied {
                    generation,
                    changes: Changes::default(),
                    not_running: not_running.clone(),
                };
                if write_message(&mut stream, &applied).is_err()
                    || tx.send((generation, snapshot)).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

#[path = "support/kubelet.rs"]
mod kubelet;
use kubelet::Mount;

fn manifest(topic: &str) -> String {
    format!(
        "apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: default
spec:
  endpointType: Mqtt
  mqttSettings:
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: remote
spec:
  endpointType: Mqtt
  mqttSettings:
    host: remote.example:1883
    authentication:
      method: UsernamePassword
      usernamePasswordSettings:
        secretRef: remote-login
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: bridge
spec:
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: default
        dataSources: [sensors/#]
    - operationType: Destination
      destinationSettings:
        endpointRef: remote
        dataDestination: {topic}
"
    )
}

fn destination(snapshot: &serde_json::Value) -> &str {
    snapshot["dataflows"][0]["dataflow"]["spec"]["operations"][1]["destinationSettings"]
        ["dataDestination"]
        .as_str()
        .unwrap()
}

#[test]
fn kubelet_updates_of_the_config_and_of_a_secret_are_pushed() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    let secrets = tmp.path().join("secrets");
    let socket = tmp.path().join("control.sock");
    let mut config = Mount::new(&conf, &[("flows.yaml", &manifest("out/${inputTopic}"))]);
    let login = [("username", "user"), ("password", "one")];
    let mut secret = Mount::new(&secrets.join("remote-login"), &login);
    let applied = fake_dataplane(&socket, Vec::new());
    let args = [
        "config-agent",
        "run",
        "--config-dir",
        conf.to_str().unwrap(),
        "--control-socket",
        socket.to_str().unwrap(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
        "--debounce-ms",
        "50",
        "--log",
        "warn",
    ];
    let cli = Cli::try_parse_from(args).expect("arguments");
    // `run` watches until the process ends; the test's end ends it.
    std::thread::spawn(move || main(cli));

    let (generation, snapshot) = applied.recv_timeout(WAIT).expect("first Apply");
    assert_eq!(generation, 1);
    assert_eq!(destination(&snapshot), "out/${inputTopic}");

    // A rotated password: the same snapshot, validated again and pushed again.
    secret.update(&[("username", "user"), ("password", "two")]);
    let (generation, again) = applied.recv_timeout(WAIT).expect("Apply after rotation");
    assert_eq!(generation, 2);
    assert_eq!(again, snapshot);

    // The configuration swapped like a ConfigMap update: the new snapshot.
    config.update(&[("flows.yaml", &manifest("moved/${inputTopic}"))]);
    let (generation, snapshot) = applied.recv_timeout(WAIT).expect("Apply after swap");
    assert_eq!(generation, 3);
    assert_eq!(destination(&snapshot), "moved/${inputTopic}");

    // A secret that loses its password: invalid, nothing pushed; fixed: pushed.
    secret.update(&[("username", "user")]);
    assert!(applied.recv_timeout(Duration::from_millis(500)).is_err());
    secret.update(&login);
    let (generation, _) = applied.recv_timeout(WAIT).expect("Apply after the fix");
    assert_eq!(generation, 4);
}

#[test]
fn once_exits_3_when_dataflows_do_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("flows.yaml"),
        manifest("out/x").replace(
            "      method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: remote-login\n",
            "      method: Anonymous\n",
        ),
    )
    .unwrap();
    let socket = tmp.path().join("control.sock");
    let applied = fake_dataplane(
        &socket,
        vec![NotRunning {
            dataflow: "azure-iot-operations/bridge".into(),
            code: "start_failed".into(),
            reason: "remote.example:1883 does not resolve".into(),
            retrying: true,
        }],
    );
    let cli = Cli::try_parse_from([
        "config-agent",
        "run",
        "--once",
        "--config-dir",
        conf.to_str().unwrap(),
        "--control-socket",
        socket.to_str().unwrap(),
        "--log",
        "warn",
    ])
    .expect("arguments");
    assert_eq!(main(cli), ExitCode::from(EXIT_NOT_RUNNING));
    let (generation, _) = applied.recv_timeout(WAIT).expect("Apply");
    assert_eq!(generation, 1);
}
