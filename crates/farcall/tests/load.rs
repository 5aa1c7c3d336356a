//! Load: many clients hammering one server lose nothing and duplicate
//! nothing; creating and releasing objects leaves nothing behind.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use farcall::{Client, Proxy, Server, Value};

/// Records, per client, the sequence numbers it saw.
#[farcall::remote]
pub struct Tally {
    pub total: i64,
    seen: HashMap<i64, i64>,
}

#[farcall::remote]
impl Tally {
    /// Checks that `seq` is the next number from `client`; returns it.
    pub fn record(&mut self, client: i64, seq: i64) -> farcall::Result<i64> {
        let last = self.seen.entry(client).or_insert(-1);
        if seq != *last + 1 {
            return Err(farcall::Error::value_error(format!(
                "client {client}: got {seq} after {last}"
            )));
        }
        *last = seq;
        self.total += 1;
        Ok(seq)
    }

    /// How many calls each client made, in client order.
    pub fn per_client(&self) -> Vec<i64> {
        let mut clients: Vec<_> = self.seen.iter().map(|(c, last)| (*c, last + 1)).collect();
        clients.sort();
        clients.into_iter().map(|(_, n)| n).collect()
    }

    /// A new object, returned by proxy (for create/release cycles).
    pub fn make(&self) -> farcall::ObjectRef {
        farcall::object(Tally {
            total: 0,
            seen: HashMap::new(),
        })
    }
}

fn serve() -> (Server, thread::JoinHandle<()>) {
    let server = Server::bind("unix://*").unwrap();
    server.publish(
        "tally",
        farcall::object(Tally {
            total: 0,
            seen: HashMap::new(),
        }),
    );
    let s = server.clone();
    let t = thread::spawn(move || s.run_forever().unwrap());
    (server, t)
}

#[test]
fn a_hundred_clients_times_ten_thousand_calls_lose_and_repeat_nothing() {
    const CLIENTS: i64 = 100;
    const CALLS: i64 = 10_000;
    let (server, serving) = serve();
    let address = server.address().to_string();
    let start = Arc::new(Barrier::new(CLIENTS as usize));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let address = address.clone();
            let start = start.clone();
            thread::spawn(move || {
                let client = Client::connect(&address).unwrap();
                let tally = Proxy::adopt(client.get_item("tally").unwrap()).unwrap();
                start.wait();
                for seq in 0..CALLS {
                    let got = tally
                        .with_timeout(Duration::from_secs(60))
                        .call_method("record", vec![Value::Int(c), Value::Int(seq)])
                        .unwrap();
                    assert_eq!(got, Value::Int(seq), "client {c}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let client = Client::connect(&address).unwrap();
    let tally = Proxy::adopt(client.get_item("tally").unwrap()).unwrap();
    assert_eq!(
        tally.get_attr("total").unwrap(),
        Value::Int(CLIENTS * CALLS)
    );
    let per_client = tally.call_method("per_client", vec![]).unwrap();
    assert_eq!(
        per_client,
        Value::List(vec![Value::Int(CALLS); CLIENTS as usize])
    );
    server.close();
    serving.join().unwrap();
}

#[test]
fn created_and_released_objects_leave_nothing_behind() {
    let (server, serving) = serve();
    let client = Client::connect(server.address()).unwrap();
    let tally = Proxy::adopt(client.get_item("tally").unwrap()).unwrap();
    let baseline = server.object_count();
    for _ in 0..20_000 {
        let made = Proxy::adopt(tally.call_method("make", vec![]).unwrap()).unwrap();
        made.release().unwrap();
    }
    assert_eq!(server.object_count(), baseline);
    // Dropped proxies are released by the background thread, soon.
    for _ in 0..2_000 {
        drop(Proxy::adopt(tally.call_method("make", vec![]).unwrap()).unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.object_count() > baseline && std::time::Instant::now() < deadline {
        let _ = client.ping();
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.object_count(), baseline);
    server.close();
    serving.join().unwrap();
}
