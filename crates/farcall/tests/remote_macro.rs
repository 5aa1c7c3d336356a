//! `#[farcall::remote]` on a struct and on its impl block: fields become
//! attributes, public `&self` / `&mut self` methods become remote methods.

use farcall::{Error, Kwargs, ObjectRef, Remote, RemoteFields, Value};

#[farcall::remote]
pub struct Counter {
    pub count: i64,
    pub label: String,
    #[farcall(name = "tags")]
    pub labels: Vec<String>,
    #[farcall(skip)]
    pub hidden: u8,
    pub extra: Value,
    secret: u8,
}

#[farcall::remote]
impl Counter {
    /// Adds `x` and returns the new count.
    pub fn add(&mut self, x: i64) -> i64 {
        self.count += x;
        self.count
    }

    pub fn get(&self) -> i64 {
        self.count
    }

    pub fn div(&self, a: f64, b: f64) -> farcall::Result<f64> {
        if b == 0.0 {
            Err(Error::exception("ZeroDivisionError", "division by zero"))
        } else {
            Ok(a / b)
        }
    }

    pub fn reset(&mut self) {
        self.count = 0;
    }

    pub fn describe(&self, prefix: String, times: Option<u32>) -> String {
        format!("{prefix}{}x{}", self.label, times.unwrap_or(1))
    }

    /// An error type other than farcall's, converted with `Into`.
    pub fn open(&self, path: String) -> std::io::Result<u64> {
        std::fs::metadata(path).map(|m| m.len())
    }

    /// Keywords are the Rust names, raw identifiers unescaped.
    pub fn scale(&mut self, r#type: i64) -> (i64, String) {
        self.count *= r#type;
        (self.count, self.label.clone())
    }

    /// Returns and takes `Value` as is.
    pub fn swap_extra(&mut self, v: Value) -> farcall::Result<Value> {
        Ok(std::mem::replace(&mut self.extra, v))
    }

    pub fn get_extra(&self) -> Value {
        self.extra.clone()
    }

    #[farcall(name = "value")]
    pub fn current_value(&self) -> i64 {
        self.count
    }

    #[farcall(skip)]
    pub fn local_only(&self) -> i64 {
        self.secret.into()
    }

    pub fn new_default() -> Counter {
        Counter::new(0)
    }

    pub fn consume(self) {}

    #[allow(dead_code)] // other attributes are kept
    fn private(&self) {}
}

impl Counter {
    fn new(count: i64) -> Self {
        Counter {
            count,
            label: "c".into(),
            labels: vec![],
            hidden: 0,
            extra: Value::None,
            secret: 7,
        }
    }
}

/// A type with no public fields and no methods expands cleanly too.
#[farcall::remote]
pub struct Empty(#[allow(dead_code)] u8);

#[farcall::remote]
impl Empty {}

fn counter() -> ObjectRef {
    farcall::object(Counter::new(0))
}

fn kw(name: &str, v: Value) -> (String, Value) {
    (name.to_string(), v)
}

/// The Python exception type name and message of a local error.
fn exception(err: Error) -> (String, String) {
    match err {
        Error::Exception { type_name, message } => (type_name, message),
        other => panic!("expected an exception, got {other:?}"),
    }
}

#[test]
fn calls_by_position_and_keyword() {
    let obj = counter();
    assert_eq!(
        obj.call_method("add", vec![Value::Int(2)], vec![]).unwrap(),
        Value::Int(2)
    );
    let kwargs = vec![kw("x", Value::Int(3))];
    assert_eq!(
        obj.call_method("add", vec![], kwargs).unwrap(),
        Value::Int(5)
    );
    assert_eq!(
        obj.call_method("get", vec![], vec![]).unwrap(),
        Value::Int(5)
    );
}

#[test]
fn mixed_and_optional_arguments() {
    let obj = counter();
    // `Option` parameters are still required; `None` is passed explicitly.
    let args = vec![Value::from("n="), Value::None];
    let got = obj.call_method("describe", args, vec![]);
    assert_eq!(got.unwrap(), Value::from("n=cx1"));
    let kwargs = vec![kw("times", Value::Int(3))];
    let got = obj.call_method("describe", vec![Value::from("n=")], kwargs);
    assert_eq!(got.unwrap(), Value::from("n=cx3"));
}

#[test]
fn unit_return_is_none() {
    let obj = counter();
    obj.call_method("add", vec![Value::Int(4)], vec![]).unwrap();
    assert_eq!(
        obj.call_method("reset", vec![], vec![]).unwrap(),
        Value::None
    );
    assert_eq!(obj.get_attr("count").unwrap(), Value::Int(0));
}

#[test]
fn tuple_return_and_raw_identifier_parameter() {
    let obj = counter();
    obj.call_method("add", vec![Value::Int(2)], vec![]).unwrap();
    let got = obj.call_method("scale", vec![], vec![kw("type", Value::Int(3))]);
    assert_eq!(
        got.unwrap(),
        Value::Tuple(vec![Value::Int(6), Value::from("c")])
    );
}

#[test]
fn result_methods_raise_remotely() {
    let obj = counter();
    let args = vec![Value::Float(1.0), Value::Float(4.0)];
    assert_eq!(
        obj.call_method("div", args, vec![]).unwrap(),
        Value::Float(0.25)
    );
    let args = vec![Value::Float(1.0), Value::Int(0)];
    let err = obj.call_method("div", args, vec![]).unwrap_err();
    assert_eq!(err.to_wire().0, "ZeroDivisionError");
    let args = vec![Value::from("/nonexistent/farcall-test")];
    let err = obj.call_method("open", args, vec![]).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

#[test]
fn values_pass_through_unchanged() {
    let obj = counter();
    let tuple = Value::Tuple(vec![Value::Int(1), Value::None]);
    let old = obj.call_method("swap_extra", vec![tuple.clone()], vec![]);
    assert_eq!(old.unwrap(), Value::None);
    assert_eq!(obj.call_method("get_extra", vec![], vec![]).unwrap(), tuple);
    assert_eq!(obj.get_attr("extra").unwrap(), tuple);
    obj.set_attr("extra", Value::from("x")).unwrap();
    assert_eq!(obj.get_attr("extra").unwrap(), Value::from("x"));
}

#[test]
fn renamed_and_hidden_methods() {
    let obj = counter();
    assert_eq!(
        obj.call_method("value", vec![], vec![]).unwrap(),
        Value::Int(0)
    );
    for name in [
        "current_value",
        "local_only",
        "new_default",
        "consume",
        "private",
    ] {
        let (ty, message) = exception(obj.call_method(name, vec![], vec![]).unwrap_err());
        assert_eq!(ty, "AttributeError", "{name}");
        assert_eq!(
            message,
            format!("'Counter' object has no attribute '{name}'")
        );
        assert!(!Counter::remote_has_method(name), "{name}");
    }
    assert!(Counter::remote_has_method("value"));
    assert!(Counter::remote_has_method("add"));
}

#[test]
fn argument_errors_are_type_errors() {
    let obj = counter();
    let cases: Vec<(Vec<Value>, Kwargs, &str)> = vec![
        (vec![], vec![], "add() missing required argument: 'x'"),
        (
            vec![Value::Int(1), Value::Int(2)],
            vec![],
            "add() got 1 too many positional arguments",
        ),
        (
            vec![Value::Int(1)],
            vec![kw("y", Value::Int(2))],
            "add() got an unexpected keyword argument 'y'",
        ),
        (
            vec![Value::from("one")],
            vec![],
            "add() argument 'x': expected int, got str",
        ),
    ];
    for (args, kwargs, want) in cases {
        let (ty, message) = exception(obj.call_method("add", args, kwargs).unwrap_err());
        assert_eq!((ty.as_str(), message.as_str()), ("TypeError", want));
    }
    // A failed call leaves the object usable and unchanged.
    assert_eq!(obj.get_attr("count").unwrap(), Value::Int(0));
}

#[test]
fn unknown_method_is_attribute_error() {
    let obj = counter();
    let (ty, message) = exception(obj.call_method("nope", vec![], vec![]).unwrap_err());
    assert_eq!(ty, "AttributeError");
    assert_eq!(message, "'Counter' object has no attribute 'nope'");
}

#[test]
fn fields_are_attributes() {
    let obj = counter();
    obj.call_method("add", vec![Value::Int(5)], vec![]).unwrap();
    assert_eq!(obj.get_attr("count").unwrap(), Value::Int(5));
    obj.set_attr("count", Value::Int(10)).unwrap();
    assert_eq!(obj.get_attr("count").unwrap(), Value::Int(10));
    obj.set_attr("label", Value::from("hits")).unwrap();
    assert_eq!(obj.get_attr("label").unwrap(), Value::from("hits"));
    obj.set_attr("tags", Value::List(vec![Value::from("a")]))
        .unwrap();
    assert_eq!(
        obj.get_attr("tags").unwrap(),
        Value::List(vec![Value::from("a")])
    );
}

#[test]
fn private_and_skipped_fields_are_invisible() {
    let obj = counter();
    for name in ["secret", "hidden", "labels", "missing"] {
        let (ty, _) = exception(obj.get_attr(name).unwrap_err());
        assert_eq!(ty, "AttributeError", "{name}");
        let (ty, _) = exception(obj.set_attr(name, Value::Int(1)).unwrap_err());
        assert_eq!(ty, "AttributeError", "{name}");
    }
}

#[test]
fn setting_a_field_checks_its_type() {
    let obj = counter();
    let (ty, _) = exception(obj.set_attr("count", Value::from("ten")).unwrap_err());
    assert_eq!(ty, "TypeError");
    assert_eq!(obj.get_attr("count").unwrap(), Value::Int(0));
}

#[test]
fn methods_read_as_bound_methods() {
    let obj = counter();
    obj.set_attr("count", Value::Int(10)).unwrap();
    let Value::Object(method) = obj.get_attr("add").unwrap() else {
        panic!("a method reads as an object");
    };
    assert_eq!(method.type_str(), "<class 'method'>");
    assert_eq!(
        method.call(vec![Value::Int(1)], vec![]).unwrap(),
        Value::Int(11)
    );
}

#[test]
fn type_name_and_type_str() {
    assert_eq!(Counter::TYPE_NAME, "Counter");
    assert_eq!(counter().type_str(), "<class 'Counter'>");
    assert_eq!(Empty::TYPE_NAME, "Empty");
}

#[test]
fn generated_traits_work_without_hosting() {
    let mut c = Counter::new(1);
    assert_eq!(c.get_field("count"), Some(Value::Int(1)));
    assert_eq!(c.get_field("secret"), None);
    assert!(c.set_field("count", Value::Int(4)).unwrap());
    assert!(!c.set_field("secret", Value::Int(4)).unwrap());
    let got = c.remote_call("add", vec![Value::Int(1)], vec![]).unwrap();
    assert_eq!(got, Value::Int(5));
    assert_eq!(c.local_only(), 7);
    let mut e = Empty(0);
    assert_eq!(e.get_field("0"), None);
    assert!(e.remote_call("x", vec![], vec![]).is_err());
}
