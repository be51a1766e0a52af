//! The setters every adapter's builder shares (PostgreSQL, Redis, HTTP): one definition,
//! so the names, types and meaning are the same in all three.
//!
//! Precedence, the same everywhere: a builder starts from the adapter's defaults and never
//! reads the environment; `Builder::config(Config::from_env("PREFIX")?)` starts it from the
//! environment instead, and every setter called afterwards wins over what the environment
//! said.

/// Generates the builder setters for the common knobs, on a builder whose [`PoolConfig`]
/// is at `self.<path>` (`pool_setters!(config.pool)`): `name`, `pool_size`,
/// `pool_size_auto`, `auto_interval`, `max_size`, `min_idle`, `acquire_timeout`,
/// `max_lifetime`, `idle_timeout`, `ping_if_idle`, `ping_timeout`, `max_uses`,
/// `leak_threshold`, `slow_query`.
///
/// [`PoolConfig`]: crate::PoolConfig
#[macro_export]
macro_rules! pool_setters {
    ($($path:ident).+) => {
        /// The pool's name (metric label) and, in upper case, its variable prefix.
        #[must_use]
        pub fn name(mut self, name: &str) -> Self {
            self.$($path).+.name = name.to_ascii_lowercase();
            self.$($path).+.prefix = name.to_ascii_uppercase();
            self
        }

        /// Steady pool size (also the ceiling unless `max_size` is set). Env:
        /// `P_POOL_SIZE`.
        #[must_use]
        pub fn pool_size(mut self, n: u32) -> Self {
            self.$($path).+.sizing = $crate::Sizing::Fixed;
            self.$($path).+.pool_size = n;
            self
        }

        /// Sizes the pool by itself (`P_POOL_SIZE=auto`): from the floor (`min_idle`, at
        /// least 1) up to `max_size` at most, growing while callers queue and more
        /// connections raise throughput, shrinking when idle (see `poolkit_core::autosize`).
        #[must_use]
        pub fn pool_size_auto(mut self, max_size: u32) -> Self {
            self.$($path).+.sizing = $crate::Sizing::Auto;
            self.$($path).+.pool_size = 1;
            self.$($path).+.max_size = Some(max_size);
            self
        }

        /// With `pool_size_auto`, the least time between two size changes. Env:
        /// `P_POOL_AUTO_INTERVAL`.
        #[must_use]
        pub fn auto_interval(mut self, every: ::std::time::Duration) -> Self {
            self.$($path).+.auto_interval = every;
            self
        }

        /// Burst ceiling above the pool size. Env: `P_POOL_MAXSIZE`.
        #[must_use]
        pub fn max_size(mut self, n: u32) -> Self {
            self.$($path).+.max_size = Some(n);
            self
        }

        /// Connections opened at build and kept warm. Env: `P_POOL_MIN_IDLE`.
        #[must_use]
        pub fn min_idle(mut self, n: u32) -> Self {
            self.$($path).+.min_idle = n;
            self
        }

        /// How long a caller waits for a connection in total. Env: `P_POOL_TIMEOUT`.
        #[must_use]
        pub fn acquire_timeout(mut self, d: ::std::time::Duration) -> Self {
            self.$($path).+.acquire_timeout = d;
            self
        }

        /// Recycle connections after this age (`None`: never). Env: `P_MAX_LIFETIME`.
        #[must_use]
        pub fn max_lifetime(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.max_lifetime = d;
            self
        }

        /// Close idle connections above `min_idle` after this long (`None`: never). Env:
        /// `P_IDLE_TIMEOUT`.
        #[must_use]
        pub fn idle_timeout(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.idle_timeout = d;
            self
        }

        /// Validate at checkout only connections idle at least this long (`ZERO`:
        /// always). Env: `P_PING_IF_IDLE`.
        #[must_use]
        pub fn ping_if_idle(mut self, d: ::std::time::Duration) -> Self {
            self.$($path).+.ping_if_idle = d;
            self
        }

        /// The checkout ping's bound. Env: `P_PING_TIMEOUT`.
        #[must_use]
        pub fn ping_timeout(mut self, d: ::std::time::Duration) -> Self {
            self.$($path).+.ping_timeout = Some(d);
            self
        }

        /// Close a connection after this many checkouts (`None`: never). Env:
        /// `P_MAX_USES`.
        #[must_use]
        pub fn max_uses(mut self, n: Option<u64>) -> Self {
            self.$($path).+.max_uses = n;
            self
        }

        /// Warn with the caller's location when a connection is held longer than this.
        /// Env: `P_LEAK_THRESHOLD`.
        #[must_use]
        pub fn leak_threshold(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.leak_threshold = d;
            self
        }

        /// Log and count operations slower than this (`None`: off). Env: `P_SLOW_QUERY`.
        #[must_use]
        pub fn slow_query(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.slow_query = d;
            self
        }
    };
}

/// Generates the builder setters for how a database adapter (PostgreSQL, Redis) opens its
/// connections, on a builder whose adapter `Config` is at `self.<path>` with the fields
/// `pool`, `password`, `resolver`, `tcp_keepalive` and `tcp_user_timeout`:
/// `password_file`, `password_provider`, `resolver`, `tcp_keepalive`, `tcp_user_timeout`.
#[macro_export]
macro_rules! connect_setters {
    ($($path:ident).+) => {
        /// Reads the password from `path` at every new connection (a Kubernetes or Docker
        /// secret mount), as `P_PASSWORD_FILE` does.
        #[must_use]
        pub fn password_file(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
            self.$($path).+.password = $crate::PasswordSource::File {
                path: path.into(),
                var: format!("{}_PASSWORD_FILE", self.$($path).+.pool.prefix),
            };
            self
        }

        /// Asks `provider` for the password of every new connection, again only once its
        /// last token is no longer fresh (RDS IAM tokens last 15 minutes; Azure AD tokens
        /// about an hour). `name` is how errors and health name it ("the RDS IAM token").
        #[must_use]
        pub fn password_provider(
            mut self,
            name: &str,
            provider: impl $crate::PasswordProvider,
        ) -> Self {
            self.$($path).+.password = $crate::PasswordSource::provider(name, provider);
            self
        }

        /// Resolves host names for every new connection with `resolver` (a
        /// service-discovery client, an override in tests) instead of the system resolver.
        #[must_use]
        pub fn resolver(mut self, resolver: impl $crate::Resolve) -> Self {
            self.$($path).+.resolver = Some(::std::sync::Arc::new(resolver));
            self
        }

        /// TCP keep-alive idle time (`None` disables). Env: `P_TCP_KEEPALIVE`.
        #[must_use]
        pub fn tcp_keepalive(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.tcp_keepalive = d;
            self
        }

        /// `TCP_USER_TIMEOUT` (`None` disables). Env: `P_TCP_USER_TIMEOUT`.
        #[must_use]
        pub fn tcp_user_timeout(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.tcp_user_timeout = d;
            self
        }
    };
}
