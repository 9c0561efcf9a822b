//! A fake Kubernetes API server on 127.0.0.1 for discovery tests: it serves exactly the
//! two reads kmsd's Kubernetes discovery makes — the EndpointSlices of one Service
//! (`GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=
//! kubernetes.io/service-name=<svc>`) and one StatefulSet (`GET
//! /apis/apps/v1/namespaces/{ns}/statefulsets/{name}`) — from mutable state, and answers
//! anything else with a Kubernetes `Status` 404 (logged to stderr, so a test shows what
//! the client asked for). Plain HTTP, no authentication; every request is recorded.

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the fake saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Path and query as sent.
    pub path_and_query: String,
    /// Whether an `Authorization` header came with it.
    pub authorization: bool,
}

#[derive(Debug, Default)]
struct State {
    namespace: String,
    service: String,
    statefulset: String,
    /// Pod name → (IP, cluster port).
    endpoints: BTreeMap<String, (String, u16)>,
    /// None: the StatefulSet does not exist (404).
    replicas: Option<i32>,
    seen: Vec<SeenRequest>,
}

/// The running fake API server (stops with the test process).
#[derive(Debug, Clone)]
pub struct FakeKube {
    /// Bound address.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeKube {
    /// Starts the fake for one namespace, headless Service and StatefulSet (no endpoints,
    /// no StatefulSet yet).
    pub fn start(namespace: &str, service: &str, statefulset: &str) -> FakeKube {
        let state = Arc::new(Mutex::new(State {
            namespace: namespace.into(),
            service: service.into(),
            statefulset: statefulset.into(),
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake kube");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                    let st = st.clone();
                    async move { handle(&st, &uri, &headers) }
                });
                let _ = axum::serve(listener, app).await;
            });
        });
        FakeKube { addr, state }
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lists pod `pod` at `ip` with the cluster port `port`.
    pub fn set_endpoint(&self, pod: &str, ip: &str, port: u16) {
        self.state
            .lock()
            .unwrap()
            .endpoints
            .insert(pod.into(), (ip.into(), port));
    }

    /// Removes pod `pod` from the slices.
    pub fn remove_endpoint(&self, pod: &str) {
        self.state.lock().unwrap().endpoints.remove(pod);
    }

    /// Sets the StatefulSet's `spec.replicas` (None: the StatefulSet does not exist).
    pub fn set_replicas(&self, replicas: Option<i32>) {
        self.state.lock().unwrap().replicas = replicas;
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| percent_decode(k) == name)
        .map(|(_, v)| percent_decode(v))
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": "NotFound", "code": 404
        })),
    )
        .into_response()
}

fn handle(state: &Mutex<State>, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut st = state.lock().unwrap();
    st.seen.push(SeenRequest {
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: headers.contains_key("authorization"),
    });
    let ns = st.namespace.clone();
    let slices_path = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    let sts_path = format!(
        "/apis/apps/v1/namespaces/{ns}/statefulsets/{}",
        st.statefulset
    );
    let path = uri.path();
    if path == slices_path {
        let want = format!("kubernetes.io/service-name={}", st.service);
        if query_param(uri, "labelSelector").as_deref() != Some(want.as_str()) {
            eprintln!("fake kube: unexpected endpointslices query {uri}");
            return not_found(format!("unexpected query {uri}"));
        }
        let items: Vec<Value> = st
            .endpoints
            .iter()
            .map(|(pod, (ip, port))| {
                json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": format!("{}-{pod}", st.service),
                        "namespace": ns,
                        "labels": {"kubernetes.io/service-name": st.service}
                    },
                    "addressType": if ip.contains(':') { "IPv6" } else { "IPv4" },
                    "endpoints": [{
                        "addresses": [ip],
                        "conditions": {"ready": false, "serving": true, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}
                    }],
                    "ports": [
                        {"name": "kms", "port": 1688, "protocol": "TCP"},
                        {"name": "cluster", "port": port, "protocol": "TCP"}
                    ]
                })
            })
            .collect();
        return Json(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": "1"},
            "items": items
        }))
        .into_response();
    }
    if path == sts_path {
        return match st.replicas {
            Some(r) => Json(json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": st.statefulset, "namespace": ns},
                "spec": {
                    "replicas": r,
                    "serviceName": st.service,
                    "selector": {"matchLabels": {"app": "kms"}},
                    "template": {"metadata": {"labels": {"app": "kms"}}}
                }
            }))
            .into_response(),
            None => not_found(format!(
                "statefulsets.apps \"{}\" not found",
                st.statefulset
            )),
        };
    }
    eprintln!("fake kube: no route for {uri}");
    not_found(format!("no route for {uri}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_label_selectors() {
        assert_eq!(
            percent_decode("kubernetes.io%2Fservice-name%3Dkms-headless"),
            "kubernetes.io/service-name=kms-headless"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
