//! `deploy/kubernetes/` checked offline (no cluster here):
//!
//! - `schemas`: what `kubectl apply -k deploy/kubernetes` would send passes the Kubernetes
//!   API schemas (`kubernetes-validate --strict`) and the prometheus-operator CRD schemas
//!   (`check-jsonschema`, schemas vendored in `tests/kubernetes/schemas/`), and the
//!   PrometheusRule is what `scripts/gen-k8s-rules.py` makes of `prometheus/rules/*.yml`.
//! - `deployment`: the probes, port, secret files, security context and resources are
//!   what the exporter needs, and the Service and ServiceMonitor reach it.
//! - `running`: the real binary started with the Deployment's environment and its secret
//!   files serves the probes, the scrape and the API key.
//!
//! Needs `kubectl` (for its built-in kustomize) and Python 3 with `kubernetes-validate`
//! and `check-jsonschema`; scripts/test.sh installs them, and a missing one fails with
//! how to install it.

#[path = "kubernetes/deployment.rs"]
mod deployment;
#[path = "kubernetes/running.rs"]
mod running;
#[path = "kubernetes/schemas.rs"]
mod schemas;
#[path = "kubernetes/support.rs"]
mod support;
