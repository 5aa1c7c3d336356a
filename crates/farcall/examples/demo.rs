//! The demo: spawn a server in a child process and drive it by proxy.
//!
//! Run with `bash scripts/demo.sh` (it builds the `farcall-counter`
//! server binary this example starts).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use farcall::{Client, Proxy, Value};

fn main() -> farcall::Result<()> {
    // The server binary sits next to the examples directory.
    let exe = std::env::current_exe()?;
    let server_exe = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("farcall-counter"))
        .expect("target directory");
    let mut child = Command::new(&server_exe)
        .arg("unix://*")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut address = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut address)?;
    let address = address.trim();
    println!("spawned a server in process {} at {address}", child.id());

    let client = Client::connect(address)?;
    let counter = Proxy::adopt(client.get_item("counter")?)?;
    println!("remote object: {counter:?}");
    for x in [1, 2, 3] {
        let total = counter.call_method("add", vec![Value::from(x)])?;
        println!("counter.add({x}) -> {total:?}");
    }
    let pid = counter.call_method("pid", vec![])?;
    println!(
        "counter.pid() -> {pid:?} (this process is {})",
        std::process::id()
    );
    assert_eq!(counter.get_attr("count")?, Value::Int(6));
    assert_eq!(pid.as_i64(), Some(child.id() as i64));

    client.close_server()?;
    let status = child.wait()?;
    println!("server closed; child exited with {status}");
    Ok(())
}
