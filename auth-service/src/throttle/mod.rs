//! Throttling of password attempts (SignUp, Login, ChangePassword, DeleteAccount) per client
//! address and per email, and of Refresh per address.
//!
//! Each limit is a GCRA (`todo_shared::rate_limit`): a key may spend a burst of `count`
//! attempts, then one every `period / count`, checked and counted atomically, so a hundred
//! parallel guesses at one email cannot all pass before the first is counted. An attempt is
//! counted before the password is checked; a successful login forgives the email's count.
//!
//! Where the counts live decides what "atomically" spans. On PostgreSQL they are rows of
//! auth-service's database, spent by one statement per attempt, so every replica draws on
//! one allowance and N replicas do not give an attacker N times the attempts; the database's
//! clock is the only clock. On SQLite, where one process is all there is, they stay in this
//! process's memory.
//!
//! The key is the normalised email whether or not an account has it, so an unknown email is
//! throttled exactly like a known one. Keys are only ever stored hashed: 64-bit keyed hashes
//! in bounded memory, or 128-bit HMACs under a key derived from `JWT_SECRET` in the database.

mod proxies;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use prometheus_client::encoding::EncodeLabelSet;
use sha2::Sha256;
use todo_shared::metrics::{Counter, Family, Metrics};
use tonic::metadata::MetadataMap;

pub use self::proxies::TrustedProxies;
use crate::error::{Error, Throttled};
use crate::store::{Charge, Refused, ThrottleKey, ThrottleStore};
pub use todo_shared::rate_limit::{Limiter, Rate};

/// The limits of auth-service's password endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// `AUTH_THROTTLE_PER_ADDRESS`: attempts per client address (Login and SignUp together).
    pub per_address: Option<Rate>,
    /// `AUTH_THROTTLE_PER_EMAIL`: attempts per normalised email (Login and SignUp together).
    pub per_email: Option<Rate>,
    /// `AUTH_TRUSTED_PROXIES`: proxies whose `x-forwarded-for` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl ThrottleConfig {
    pub const DEFAULT_PER_ADDRESS: Rate = Rate::per_minute(120);
    pub const DEFAULT_PER_EMAIL: Rate = Rate::per_minute(10);

    /// No throttling at all: for load tests of the hashing path.
    pub fn off() -> Self {
        Self { per_address: None, per_email: None, trusted_proxies: TrustedProxies::default() }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_address: Some(Self::DEFAULT_PER_ADDRESS),
            per_email: Some(Self::DEFAULT_PER_EMAIL),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// One of the limits: what it is called in metrics and how its keys are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PasswordPerAddress,
    PasswordPerEmail,
    /// Refresh calls per address: the same rate as password attempts, counted apart so a
    /// browser's refreshes never spend its user's login attempts.
    RefreshPerAddress,
}

impl Kind {
    const ALL: [Self; 3] = [Self::PasswordPerAddress, Self::PasswordPerEmail, Self::RefreshPerAddress];

    /// `kind` of `todo_throttle_refusals_total`.
    fn label(self) -> &'static str {
        match self {
            Self::PasswordPerAddress => "password_per_address",
            Self::PasswordPerEmail => "password_per_email",
            Self::RefreshPerAddress => "refresh_per_address",
        }
    }

    /// Prefixed to the key before hashing, so one address has one key per limit.
    fn tag(self) -> u8 {
        match self {
            Self::PasswordPerAddress => b'a',
            Self::PasswordPerEmail => b'e',
            Self::RefreshPerAddress => b'r',
        }
    }

    fn refusal(self, wait: Duration) -> Throttled {
        match self {
            Self::PasswordPerAddress | Self::RefreshPerAddress => Throttled::Address(wait),
            Self::PasswordPerEmail => Throttled::Email(wait),
        }
    }
}

/// A limit that is on: its rate, and its counts for when they are kept in this process.
struct Limit {
    kind: Kind,
    rate: Rate,
    local: Limiter,
}

impl Limit {
    fn new(kind: Kind, rate: Option<Rate>) -> Option<Self> {
        rate.map(|rate| Self { kind, rate, local: Limiter::new(rate) })
    }
}

/// The counts kept in auth-service's database, for every replica.
struct Shared {
    store: Arc<dyn ThrottleStore>,
    /// Keyed with a subkey of `JWT_SECRET`: the same on every replica, and the table's keys
    /// say nothing of the emails and addresses behind them.
    mac: Hmac<Sha256>,
}

impl Shared {
    fn key(&self, kind: Kind, raw: &[u8]) -> ThrottleKey {
        let mut mac = self.mac.clone();
        mac.update(&[kind.tag()]);
        mac.update(raw);
        let digest = mac.finalize().into_bytes();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

pub struct Throttle {
    password_per_address: Option<Limit>,
    password_per_email: Option<Limit>,
    refresh_per_address: Option<Limit>,
    shared: Option<Shared>,
    trusted_proxies: TrustedProxies,
    refusals: Family<RefusalKind, Counter>,
}

/// Which limit refused: `password_per_address`, `password_per_email`, `refresh_per_address`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalKind {
    kind: &'static str,
}

impl Throttle {
    /// Counts kept in this process: right where one process is all there is (SQLite).
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            password_per_address: Limit::new(Kind::PasswordPerAddress, config.per_address),
            password_per_email: Limit::new(Kind::PasswordPerEmail, config.per_email),
            refresh_per_address: Limit::new(Kind::RefreshPerAddress, config.per_address),
            shared: None,
            trusted_proxies: config.trusted_proxies.clone(),
            refusals: Family::default(),
        }
    }

    /// Counts kept in `store`, shared by every replica that holds the same `secret`.
    pub fn shared_through(mut self, store: Arc<dyn ThrottleStore>, secret: &[u8]) -> Self {
        let subkey = todo_shared::token::derive_key(secret, b"todo-grpc auth throttle key v1");
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mac =
            Hmac::<Sha256>::new_from_slice(&subkey).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        self.shared = Some(Shared { store, mac });
        self
    }

    /// Registers `todo_throttle_refusals_total{kind}`.
    pub fn register_metrics(&self, metrics: &Metrics) {
        for kind in Kind::ALL {
            // Every kind present from the start, at 0, so a rate() over it is defined.
            let _ = self.refusals.get_or_create(&RefusalKind { kind: kind.label() });
        }
        metrics.register(
            "todo_throttle_refusals",
            "Attempts refused with RESOURCE_EXHAUSTED by a throttle, by which limit refused them.",
            self.refusals.clone(),
        );
    }

    pub fn client_address(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        self.trusted_proxies.client_address(peer, metadata)
    }

    /// Counts one password attempt by `address` on `email` (normalised), or refuses it. The
    /// address is checked first, so a refused address spends none of the email's attempts.
    pub async fn attempt(&self, address: Option<IpAddr>, email: &str) -> Result<(), Error> {
        let address = address.map(|ip| proxies::address_key(ip).to_be_bytes());
        let by_address = self.password_per_address.as_ref().zip(address.as_ref().map(|a| a.as_slice()));
        let by_email = self.password_per_email.as_ref().map(|limit| (limit, email.as_bytes()));
        self.spend([by_address, by_email]).await
    }

    /// Counts one Refresh from `address`, or refuses it.
    pub async fn refresh_attempt(&self, address: Option<IpAddr>) -> Result<(), Error> {
        let address = address.map(|ip| proxies::address_key(ip).to_be_bytes());
        let by_address = self.refresh_per_address.as_ref().zip(address.as_ref().map(|a| a.as_slice()));
        self.spend([by_address, None]).await
    }

    /// Spends one attempt of each charge in order, stopping at the first refused; `None`
    /// charges are limits that are off or keys that are unknown (no peer address).
    async fn spend(&self, charges: [Option<(&Limit, &[u8])>; 2]) -> Result<(), Error> {
        let mut charges = charges.into_iter().flatten();
        let Some(first) = charges.next() else { return Ok(()) };
        let then = charges.next();
        let refused = match &self.shared {
            None => {
                let now = Instant::now();
                [Some(first), then]
                    .into_iter()
                    .flatten()
                    .find_map(|(limit, key)| limit.local.check(key, now).err().map(|wait| (limit.kind, wait)))
            }
            Some(shared) => {
                let charge = |(limit, key): (&Limit, &[u8])| Charge {
                    key: shared.key(limit.kind, key),
                    interval: limit.rate.interval(),
                    tolerance: limit.rate.tolerance(),
                };
                match shared.store.spend(charge(first), then.map(charge)).await? {
                    None => None,
                    Some(Refused::First(wait)) => Some((first.0.kind, wait)),
                    Some(Refused::Then(wait)) => then.map(|(limit, _)| (limit.kind, wait)),
                }
            }
        };
        match refused {
            None => Ok(()),
            Some((kind, wait)) => {
                self.refusals.get_or_create(&RefusalKind { kind: kind.label() }).inc();
                Err(Error::Throttled(kind.refusal(wait)))
            }
        }
    }

    /// The right password: the email's failed attempts no longer count against it.
    pub async fn succeeded(&self, email: &str) {
        let Some(limit) = &self.password_per_email else { return };
        match &self.shared {
            None => limit.local.forgive(email.as_bytes()),
            Some(shared) => {
                if let Err(err) = shared.store.forgive(shared.key(limit.kind, email.as_bytes())).await {
                    // The login stands; the email keeps its spent attempts until they refill.
                    tracing::warn!(error = %err, "could not reset a throttle count after a login");
                }
            }
        }
    }

    /// Deletes the shared counts that are back to a full burst (they mean the same as no
    /// count). Returns how many.
    pub async fn prune(&self) -> Result<u64, Error> {
        match &self.shared {
            None => Ok(0),
            Some(shared) => shared.store.prune_throttle().await,
        }
    }
}
