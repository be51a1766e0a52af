//! Secrets that rotate: a password read from a file at every new connection (a Kubernetes
//! or Docker secret mount, `P_PASSWORD_FILE`), or asked of a provider with an expiry (RDS
//! IAM and Azure AD tokens). Connections already open keep serving until their lifetime;
//! only new connections use the new secret. A new secret that fails is kept for health
//! and for the caller's error, which names where the secret came from. The secret itself
//! never reaches a log, a `Debug`, a label or a JSON body.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Alert, BoxFuture, Secret, Severity};

/// The error a password provider returns.
pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// A secret from a provider, with when it stops being accepted for new logins.
#[derive(Clone)]
pub struct Token {
    secret: Secret,
    expires_at: Option<Instant>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Token {
    /// A token accepted for new logins for `valid_for` from now (an RDS IAM token: 15 min).
    #[must_use]
    pub fn expires_in(secret: impl Into<Secret>, valid_for: Duration) -> Self {
        Self {
            secret: secret.into(),
            expires_at: Some(Instant::now() + valid_for),
        }
    }

    /// A token that does not expire (asked for again only after a failed login).
    #[must_use]
    pub fn without_expiry(secret: impl Into<Secret>) -> Self {
        Self {
            secret: secret.into(),
            expires_at: None,
        }
    }

    /// Whether the token is still good for a login that starts now: not within a tenth of
    /// its remaining life (at most 30 s) of its expiry.
    fn fresh(&self, fetched: Instant, now: Instant) -> bool {
        match self.expires_at {
            None => true,
            Some(at) => {
                let margin =
                    (at.saturating_duration_since(fetched) / 10).min(Duration::from_secs(30));
                now + margin < at
            }
        }
    }
}

/// Asks for the current password: an async callback, called when no cached token is
/// fresh (see [`Token`]). A closure `Fn() -> impl Future<Output = Result<Token, ProviderError>>`
/// is a provider.
pub trait PasswordProvider: Send + Sync + 'static {
    /// The current secret.
    fn token(&self) -> BoxFuture<'static, Result<Token, ProviderError>>;
}

impl<F, Fut> PasswordProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, ProviderError>> + Send + 'static,
{
    fn token(&self) -> BoxFuture<'static, Result<Token, ProviderError>> {
        Box::pin(self())
    }
}

/// Where a pool's password comes from.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum PasswordSource {
    /// The URL's (or `P_PASSWORD`): fixed for the pool's life.
    #[default]
    Url,
    /// A file read at every new connection (trailing newline removed).
    File {
        /// The file.
        path: PathBuf,
        /// The variable that named it (`DATABASE_PASSWORD_FILE`), for messages.
        var: String,
    },
    /// A provider asked when its last token is no longer fresh.
    Provider {
        /// How messages name it ("the IAM token provider").
        name: String,
        /// The callback.
        provider: Arc<dyn PasswordProvider>,
    },
}

impl PasswordSource {
    /// A provider source named `name` in messages.
    pub fn provider(name: impl Into<String>, provider: impl PasswordProvider) -> Self {
        Self::Provider {
            name: name.into(),
            provider: Arc::new(provider),
        }
    }

    /// How messages name the source: `DATABASE_PASSWORD_FILE=/run/secrets/db`, `the IAM
    /// token provider`, or `the password in the URL`. Never the secret.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Url => "the password in the URL".to_owned(),
            Self::File { path, var } => format!("{var}={}", path.display()),
            Self::Provider { name, .. } => name.clone(),
        }
    }

    /// Whether the secret can change while the pool runs.
    #[must_use]
    pub fn rotates(&self) -> bool {
        !matches!(self, Self::Url)
    }
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why the current secret could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read the password from {source_name}: {reason}")]
#[non_exhaustive]
pub struct CredentialError {
    /// Where it should have come from ([`PasswordSource::describe`]).
    pub source_name: String,
    /// What went wrong (never the secret).
    pub reason: String,
}

/// A login refused with a secret from a rotating source.
#[derive(Debug, Clone)]
struct Refusal {
    at: Instant,
    reason: String,
}

/// A pool's secret at run time: the source, the provider's cached token, and the last
/// refused login (for health). Shared by the pool's connects.
pub struct Credentials {
    source: PasswordSource,
    cache: tokio::sync::Mutex<Option<(Token, Instant)>>,
    refused: Mutex<Option<Refusal>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The run-time state for `source`.
    #[must_use]
    pub fn new(source: PasswordSource) -> Self {
        Self {
            source,
            cache: tokio::sync::Mutex::new(None),
            refused: Mutex::new(None),
        }
    }

    /// Where the secret comes from.
    #[must_use]
    pub fn source(&self) -> &PasswordSource {
        &self.source
    }

    /// The password for a connection opened now: `None` for [`PasswordSource::Url`] (the
    /// URL's own is used), the file's content, or the provider's token (asked again when
    /// the cached one is no longer fresh; concurrent connects share one call).
    ///
    /// # Errors
    /// [`CredentialError`] naming the source when the file cannot be read or the
    /// provider fails.
    pub async fn password(&self) -> Result<Option<Secret>, CredentialError> {
        match &self.source {
            PasswordSource::Url => Ok(None),
            PasswordSource::File { path, .. } => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    self.error(format!("{e} (the file is read at every new connection)"))
                })?;
                let secret = text.strip_suffix('\n').unwrap_or(&text);
                let secret = secret.strip_suffix('\r').unwrap_or(secret);
                if secret.is_empty() {
                    return Err(self.error("the file is empty".to_owned()));
                }
                Ok(Some(Secret::new(secret)))
            }
            PasswordSource::Provider { provider, .. } => {
                let mut cache = self.cache.lock().await;
                let now = Instant::now();
                if let Some((token, fetched)) = cache.as_ref()
                    && token.fresh(*fetched, now)
                {
                    return Ok(Some(token.secret.clone()));
                }
                let token = provider
                    .token()
                    .await
                    .map_err(|e| self.error(format!("the provider failed: {e}")))?;
                let secret = token.secret.clone();
                *cache = Some((token, now));
                Ok(Some(secret))
            }
        }
    }

    fn error(&self, reason: String) -> CredentialError {
        CredentialError {
            source_name: self.source.describe(),
            reason,
        }
    }

    /// A login with `used` (what [`Credentials::password`] gave that connect) was refused
    /// with `reason` (the server's words): kept for health until a login succeeds. When
    /// `used` is the provider's cached token, the token is dropped, so the next connect
    /// asks for a new one; a token fetched since then is kept (the connects that were
    /// refused together ask the provider once, not once each).
    pub fn refused(&self, reason: String, used: Option<&Secret>) {
        if let PasswordSource::Provider { .. } = self.source
            && let Ok(mut cache) = self.cache.try_lock()
            && cache
                .as_ref()
                .is_some_and(|(token, _)| Some(&token.secret) == used)
        {
            *cache = None;
        }
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(Refusal {
            at: Instant::now(),
            reason,
        });
    }

    /// A login succeeded: the secret in force works.
    pub fn accepted(&self) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.is_some() {
            *refused = None;
        }
    }

    /// The alert for health while the last login with the current secret was refused:
    /// names the source; `open` connections opened earlier keep serving.
    #[must_use]
    pub fn alert(&self, pool: &str, open: u64) -> Option<Alert> {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let source = self.source.describe();
        Some(Alert::new(
            Severity::Critical,
            pool,
            format!(
                "new connections are refused with the password from {source} ({:.0} s ago: {}); {open} connections opened earlier keep serving until their lifetime",
                refused.at.elapsed().as_secs_f64(),
                refused.reason
            ),
            format!(
                "put the password the server expects in {source}; the pool reads it again at every new connection"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    #[tokio::test]
    async fn a_file_is_read_at_every_connect_and_its_errors_name_it() {
        let path = std::env::temp_dir().join(format!("poolkit-cred-{}", std::process::id()));
        std::fs::write(&path, "first\n").unwrap();
        let c = Credentials::new(PasswordSource::File {
            path: path.clone(),
            var: "APP_PASSWORD_FILE".into(),
        });
        assert_eq!(c.password().await.unwrap().unwrap().expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(c.password().await.unwrap().unwrap().expose(), "second");
        std::fs::remove_file(&path).unwrap();
        let e = c.password().await.unwrap_err();
        assert!(e.to_string().contains("APP_PASSWORD_FILE="), "{e}");
        assert!(format!("{c:?}").contains("APP_PASSWORD_FILE"));
    }

    #[tokio::test]
    async fn a_provider_is_asked_again_only_when_its_token_goes_stale() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let c = Credentials::new(PasswordSource::provider("the test provider", move || {
            let n = seen.fetch_add(1, SeqCst);
            async move {
                Ok(Token::expires_in(
                    format!("tok{n}"),
                    Duration::from_millis(300),
                ))
            }
        }));
        assert_eq!(c.password().await.unwrap().unwrap().expose(), "tok0");
        assert_eq!(
            c.password().await.unwrap().unwrap().expose(),
            "tok0",
            "cached"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            c.password().await.unwrap().unwrap().expose(),
            "tok1",
            "expired"
        );
        // Two connects with tok1 are refused together: the first refusal drops tok1, the
        // next connect fetches tok2, and the second refusal (of tok1) keeps tok2.
        let tok1 = Secret::new("tok1");
        c.refused("password authentication failed".into(), Some(&tok1));
        let alert = c.alert("db", 3).expect("an alert");
        assert!(
            alert.message.contains("the test provider") && alert.message.contains("3 connections"),
            "{}",
            alert.message
        );
        assert_eq!(
            c.password().await.unwrap().unwrap().expose(),
            "tok2",
            "a refusal drops the token"
        );
        c.refused("password authentication failed".into(), Some(&tok1));
        assert_eq!(
            c.password().await.unwrap().unwrap().expose(),
            "tok2",
            "a refusal of an older token keeps the new one"
        );
        assert_eq!(calls.load(SeqCst), 3);
        c.accepted();
        assert!(c.alert("db", 3).is_none());
        let failing = Credentials::new(PasswordSource::provider("iam", || async {
            Err::<Token, ProviderError>("no credentials in the environment".into())
        }));
        let e = failing.password().await.unwrap_err();
        assert!(
            e.to_string().contains("iam") && e.to_string().contains("no credentials"),
            "{e}"
        );
        assert!(!format!("{:?}", Token::without_expiry("s3cret")).contains("s3cret"));
    }
}
