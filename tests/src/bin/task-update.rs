//! `task-update SOCKET NAMESPACE ID RESOURCES`: containerd's `Tasks.Update` for task `ID`, as
//! containerd's own clients send it (the OCI `LinuxResources` JSON in an `Any`); ctr 1.6 has
//! no `task update`. `RESOURCES` is passed as it is, so tests can send bad ones too.
//! Success: nothing printed, exit 0. Failure: `<grpc code>: <message>` on stderr, exit 1.

use std::process::ExitCode;
use std::time::Duration;

use containerd_client::services::v1::UpdateTaskRequest;
use containerd_client::Client;

const RESOURCES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, namespace, id, resources] = args.as_slice() else {
        eprintln!("usage: task-update SOCKET NAMESPACE ID RESOURCES-JSON");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("task-update: async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(update(socket, namespace, id, resources)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn update(socket: &str, namespace: &str, id: &str, resources: &str) -> Result<(), String> {
    let channel = containerd_client::connect(socket)
        .await
        .map_err(|e| format!("connect {socket}: {e}"))?;
    let client = Client::from(channel);
    let mut req = tonic::Request::new(UpdateTaskRequest {
        container_id: id.to_string(),
        resources: Some(prost_types::Any {
            type_url: RESOURCES_TYPE.to_string(),
            value: resources.as_bytes().to_vec(),
        }),
        annotations: Default::default(),
    });
    req.set_timeout(Duration::from_secs(30));
    let ns = namespace
        .parse()
        .map_err(|e| format!("namespace {namespace:?}: {e}"))?;
    req.metadata_mut().insert("containerd-namespace", ns);
    client
        .tasks()
        .update(req)
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}
