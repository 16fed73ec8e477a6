//! Task events to containerd, in the order they happened.
//!
//! Callers enqueue (never block on containerd); one thread forwards each event over
//! containerd's ttrpc socket. If containerd is away (restarting), the thread reconnects and
//! retries the same event, so nothing is reordered and a restart loses nothing.

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context;
use containerd_shim::protos::{Client, EventsClient};
use containerd_shim::util::{connect, timestamp};

/// The protobuf package of containerd's task events: an event's type is `<package>.<message>`.
const EVENTS_PACKAGE: &str = "containerd.events";

/// How long one event is retried while containerd cannot be reached.
const GIVE_UP: Duration = Duration::from_secs(120);
const CALL_TIMEOUT_NS: i64 = 5_000_000_000;

struct Queued {
    topic: &'static str,
    event: Any,
    at: Timestamp,
}

enum Msg {
    Event(Queued),
    /// Answered once every event queued before it was forwarded (or given up on).
    Flush(SyncSender<()>),
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Msg>,
}

impl Publisher {
    /// Starts the forwarding thread for containerd at `address` (its ttrpc socket).
    pub fn start(address: String, namespace: String) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || forward_all(&address, &namespace, &rx))?;
        Ok(Self { tx })
    }

    fn send<M: Message>(&self, topic: &'static str, event: M) {
        let event = match pack(&event) {
            Ok(a) => a,
            Err(e) => {
                log::error!("encode {topic} event: {e}");
                return;
            }
        };
        let at = timestamp().unwrap_or_default();
        if self
            .tx
            .send(Msg::Event(Queued { topic, event, at }))
            .is_err()
        {
            log::error!("event thread gone; {topic} event dropped");
        }
    }

    /// Waits, at most `limit`, until every event queued so far went out: the shim calls it
    /// before it exits, so that the last events (a TaskDelete) are not lost with the process.
    pub fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = sync_channel(1);
        self.tx.send(Msg::Flush(done)).is_ok() && wait.recv_timeout(limit).is_ok()
    }

    pub fn create(&self, e: TaskCreate) {
        self.send(topics::TASK_CREATE_EVENT_TOPIC, e);
    }
    pub fn start_(&self, e: TaskStart) {
        self.send(topics::TASK_START_EVENT_TOPIC, e);
    }
    pub fn exec_added(&self, e: TaskExecAdded) {
        self.send(topics::TASK_EXEC_ADDED_EVENT_TOPIC, e);
    }
    pub fn exec_started(&self, e: TaskExecStarted) {
        self.send(topics::TASK_EXEC_STARTED_EVENT_TOPIC, e);
    }
    pub fn paused(&self, e: TaskPaused) {
        self.send(topics::TASK_PAUSED_EVENT_TOPIC, e);
    }
    pub fn resumed(&self, e: TaskResumed) {
        self.send(topics::TASK_RESUMED_EVENT_TOPIC, e);
    }
    pub fn oom(&self, e: TaskOOM) {
        self.send(topics::TASK_OOM_EVENT_TOPIC, e);
    }
    pub fn exit(&self, e: TaskExit) {
        self.send(topics::TASK_EXIT_EVENT_TOPIC, e);
    }
    pub fn delete(&self, e: TaskDelete) {
        self.send(topics::TASK_DELETE_EVENT_TOPIC, e);
    }
}

/// An event as containerd's `Any`. The type is named from the message's static name: asking
/// protobuf's reflection for it (containerd-shim's `convert_to_any`) first builds the
/// descriptors of every file the event's file imports, descriptor.proto among them, which
/// took a millisecond of the first event of every shim, the `TaskCreate` of its create.
fn pack<M: Message>(event: &M) -> Result<Any, String> {
    let value = event.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(Any {
        type_url: format!("{EVENTS_PACKAGE}.{}", M::NAME),
        value,
        ..Default::default()
    })
}

fn dial(address: &str) -> Option<EventsClient> {
    let fd = connect(address).ok()?;
    Client::new(fd).ok().map(EventsClient::new)
}

fn forward_all(address: &str, namespace: &str, rx: &Receiver<Msg>) {
    let mut client: Option<EventsClient> = None;
    for msg in rx.iter() {
        let q = match msg {
            Msg::Event(q) => q,
            Msg::Flush(done) => {
                let _ = done.try_send(());
                continue;
            }
        };
        let mut req = ForwardRequest::new();
        let mut env = Envelope::new();
        env.set_topic(q.topic.to_string());
        env.set_namespace(namespace.to_string());
        env.set_timestamp(q.at);
        env.set_event(q.event);
        req.set_envelope(env);
        let began = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if client.is_none() {
                client = dial(address);
            }
            if let Some(c) = &client {
                match c.forward(context::with_timeout(CALL_TIMEOUT_NS), &req) {
                    Ok(_) => break,
                    Err(e) => {
                        log::warn!("publish {}: {e}; reconnecting", q.topic);
                        client = None;
                    }
                }
            }
            if began.elapsed() > GIVE_UP {
                log::error!(
                    "containerd unreachable at {address}; {} event dropped",
                    q.topic
                );
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    fn named_as_reflection_names<M: MessageFull>(m: M) {
        let any = pack(&m).unwrap();
        assert_eq!(any.type_url, M::descriptor().full_name());
        assert_eq!(any.value, m.write_to_bytes().unwrap());
    }

    #[test]
    fn every_event_type_is_named_as_containerd_knows_it() {
        named_as_reflection_names(TaskCreate {
            container_id: "c".into(),
            pid: 7,
            ..Default::default()
        });
        named_as_reflection_names(TaskStart::default());
        named_as_reflection_names(TaskExecAdded::default());
        named_as_reflection_names(TaskExecStarted::default());
        named_as_reflection_names(TaskPaused::default());
        named_as_reflection_names(TaskResumed::default());
        named_as_reflection_names(TaskOOM::default());
        named_as_reflection_names(TaskExit {
            exit_status: 137,
            ..Default::default()
        });
        named_as_reflection_names(TaskDelete::default());
        assert_eq!(
            pack(&TaskOOM::default()).unwrap().type_url,
            "containerd.events.TaskOOM"
        );
    }
}
