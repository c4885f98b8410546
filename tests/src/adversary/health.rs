//! Health and panics: a service still SERVING, and a detector of panics outside the test code.

use std::sync::{Mutex, OnceLock};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Running;

/// Asserts the service answers health for the server and for `service` with SERVING.
pub async fn assert_serving(running: &Running, service: &str) {
    let mut health = HealthClient::new(running.channel().await);
    for name in ["", service] {
        let status = health
            .check(HealthCheckRequest { service: name.to_owned() })
            .await
            .unwrap_or_else(|e| panic!("health check {name:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "health of {name:?}");
    }
}

static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Starts recording every panic of the process whose location is outside the test code
/// (`tests/`): a panic in a service, in tonic, prost or hyper. Idempotent. The previous hook
/// still runs, so panics are printed as usual.
pub fn watch_panics() {
    let mut installed = false;
    PANICS.get_or_init(|| {
        installed = true;
        Mutex::new(Vec::new())
    });
    if installed {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| l.file().to_owned()).unwrap_or_default();
            if !location.starts_with("tests/") && !location.contains("/tests/") {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let thread = std::thread::current().name().unwrap_or("?").to_owned();
                if let Some(panics) = PANICS.get() {
                    panics
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(format!("{location} on thread {thread}: {message}"));
                }
            }
            previous(info);
        }));
    }
}

/// The panics [`watch_panics`] has recorded so far.
pub fn service_panics() -> Vec<String> {
    PANICS.get().map(|p| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()).unwrap_or_default()
}
