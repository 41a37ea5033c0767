//! The ctxsync MCP server: the shared context as MCP tools and resources, so an agent in
//! Claude Code, VS Code, Codex, Cursor or Gemini CLI pulls, pushes, claims and waits
//! without being told about a CLI.
//!
//! One handler, [`CtxsyncMcp`], over an `Arc<dyn Store>` and an identity, served two
//! ways:
//!
//! * [`serve_stdio`] — `ctxsync mcp`: the binary passes the embedded SQLite store or its
//!   remote store (with the outbox), and the agent named by `--agent`/env/config.
//! * [`http_service`] — `/mcp` on `ctxsync serve` (Streamable HTTP, both the 2025-11-25
//!   handshake revision and the 2026-07-28 stateless one). The server authenticates the
//!   bearer token and checks `Origin` in front of it, and puts an [`Identity`] (the
//!   token's agent) in the request's extensions.
//!
//! Modules: [`schema`] (tool list, flat input schemas), [`tools`] (what each tool does,
//! blocking; the claim tools in [`claims`]), [`wait`] (the `wait` tool), [`resources`] (`ctxsync://` resources and their
//! subscriptions), [`stale`] (the `behind`/`changed_sections` notice).
//!
//! Every failure of a tool — bad input, unknown tool, a refused or conflicting push — is
//! a tool result with `isError: true`, never a JSON-RPC error, and changes nothing.
#![forbid(unsafe_code)]

pub mod claims;
mod pipes;
pub mod resources;
pub mod schema;
pub mod stale;
pub mod tools;
pub mod wait;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ctxsync_store::{Role, Store};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::{json, Map, Value};

use tools::{Call, ToolError};

/// Who calls, as the HTTP front end puts it in the request's extensions (the bearer
/// token's agent and role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    pub role: Role,
}

/// How a [`CtxsyncMcp`] behaves.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// The context a tool acts on when its arguments name none.
    pub context: String,
    /// The agent of every call (stdio); `None` in HTTP mode (the token decides) or when
    /// none is configured (reads only).
    pub agent: Option<String>,
    /// How to name an agent, for the error of a write without one.
    pub agent_hint: String,
    /// How often `wait` and resource subscriptions look at the store's head.
    pub poll_interval: Duration,
    /// Longest `wait` (30 s).
    pub max_wait: Duration,
    /// Largest tool arguments accepted, as JSON bytes.
    pub max_argument_bytes: usize,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            context: "default".into(),
            agent: None,
            agent_hint: "start the server with --agent NAME, set CTXSYNC_AGENT=NAME, or put `agent = \"NAME\"` in ctxsync.toml".into(),
            poll_interval: Duration::from_millis(20),
            max_wait: Duration::from_secs(30),
            max_argument_bytes: 1024 * 1024,
        }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    options: McpOptions,
    seen: stale::Seen,
}

/// The MCP handler. Cheap to clone; each clone shares the store and the presence view,
/// while each [`CtxsyncMcp::session`] keeps its own resource subscriptions.
#[derive(Clone)]
pub struct CtxsyncMcp {
    shared: Arc<Shared>,
    subscriptions: Arc<resources::Subscriptions>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn tool_list() -> &'static [Tool] {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        schema::tools()
            .into_iter()
            .filter_map(|t| match serde_json::from_value::<Tool>(t) {
                Ok(tool) => Some(tool),
                Err(e) => {
                    tracing::error!("a tool definition does not parse: {e}");
                    None
                }
            })
            .collect()
    })
}

/// An error tool result: a message, a code, and whatever detail there is.
fn error_result(error: &ToolError, extra: Option<Value>) -> CallToolResult {
    let mut body = match error {
        ToolError::Refused { detail, .. } => detail.clone(),
        _ => json!({}),
    };
    body["error"] = json!({"code": error.code(), "message": error.to_string()});
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut body) {
        for (k, v) in extra {
            map.entry(k).or_insert(v);
        }
    }
    let text = format!("error ({}): {error}\n{body}", error.code());
    let mut result = CallToolResult::structured_error(body);
    result.content = vec![rmcp::model::ContentBlock::text(text)];
    result
}

impl CtxsyncMcp {
    pub fn new(store: Arc<dyn Store>, options: McpOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                options,
                seen: stale::Seen::default(),
            }),
            subscriptions: Arc::new(resources::Subscriptions::default()),
        }
    }

    /// A handler for a new MCP session: shares the store and presence, with its own
    /// subscriptions.
    pub fn session(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            subscriptions: Arc::new(resources::Subscriptions::default()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn options(&self) -> &McpOptions {
        &self.shared.options
    }

    /// The caller: the HTTP identity if there is one, else the configured agent.
    fn identity(&self, context: &RequestContext<RoleServer>) -> (Option<String>, Role) {
        let from_http = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Identity>())
            .or_else(|| context.extensions.get::<Identity>());
        match from_http {
            Some(id) => (Some(id.agent.clone()), id.role),
            None => (self.shared.options.agent.clone(), Role::Agent),
        }
    }

    /// Runs one tool call to its answer object (blocking parts on the blocking pool).
    async fn run_tool(
        &self,
        name: &str,
        ctx: String,
        arguments: Map<String, Value>,
        agent: Option<String>,
        role: Role,
        context: &RequestContext<RoleServer>,
    ) -> Result<(String, Value), (Option<String>, ToolError)> {
        if role == Role::Viewer
            && !matches!(
                name,
                "pull" | "get" | "conflicts" | "history" | "wait" | "who"
            )
        {
            return Err((
                Some(ctx),
                ToolError::Store(ctxsync_store::StoreError::Forbidden(
                    "this token is a viewer's (read-only); writes need an agent or admin token"
                        .into(),
                )),
            ));
        }
        if name == "wait" {
            let answer = tokio::select! {
                r = wait::wait(self.clone(), ctx.clone(), &arguments) => r,
                _ = context.ct.cancelled() => Err(ToolError::Input("the wait was cancelled".into())),
            };
            return answer.map(|a| (ctx.clone(), a)).map_err(|e| (Some(ctx), e));
        }
        let shared = Arc::clone(&self.shared);
        let tool = name.to_owned();
        let ctx2 = ctx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let call = Call {
                store: shared.store.as_ref(),
                context: ctx2,
                agent,
                actor_role: role,
                agent_hint: &shared.options.agent_hint,
            };
            dispatch(&tool, &call, &arguments)
        })
        .await;
        match joined {
            Ok(Ok(answer)) => Ok((ctx, answer)),
            Ok(Err(e)) => Err((Some(ctx), e)),
            Err(e) => Err((
                Some(ctx),
                ToolError::Store(ctxsync_store::StoreError::Io(format!(
                    "the tool failed: {e}"
                ))),
            )),
        }
    }

    /// Records that `agent` sees `seen` (clamped to the head by the store) and returns
    /// what it had not seen before; a store that cannot tell gives an empty view.
    async fn observe(&self, ctx: &str, agent: &str, seen: u64) -> stale::StaleView {
        let shared = Arc::clone(&self.shared);
        let (ctx2, agent2) = (ctx.to_owned(), agent.to_owned());
        let observed = tokio::task::spawn_blocking(move || {
            shared
                .seen
                .observe(shared.store.as_ref(), &ctx2, &agent2, seen)
        })
        .await;
        match observed {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::debug!("no stale view: {e}");
                stale::StaleView::default()
            }
            Err(e) => {
                tracing::warn!("no stale view: {e}");
                stale::StaleView::default()
            }
        }
    }
}

/// Adds `context`, `behind` and `changed_sections` to an answer.
fn annotate(ctx: &str, view: &stale::StaleView, answer: &mut Value) {
    let revision = answer.get("revision").and_then(Value::as_u64).unwrap_or(0);
    if let Value::Object(map) = answer {
        map.insert("context".into(), json!(ctx));
        map.insert("revision".into(), json!(revision));
        map.insert("behind".into(), json!(view.behind));
        map.insert("changed_sections".into(), json!(view.changed_sections));
    }
}

/// The blocking tools by name.
fn dispatch(name: &str, call: &Call, arguments: &Map<String, Value>) -> tools::ToolResult {
    match name {
        "pull" => tools::pull(call, arguments),
        "get" => tools::get(call, arguments),
        "set" => tools::set(call, arguments),
        "push" => tools::push(call, arguments),
        "conflicts" => tools::conflicts(call, arguments),
        "resolve" => tools::resolve(call, arguments),
        "history" => tools::history(call, arguments),
        "handover" => tools::handover(call, arguments, now_ms()),
        "claim" => claims::claim(call, arguments),
        "release" => claims::release(call, arguments),
        "who" => claims::who(call, arguments),
        other => Err(ToolError::Input(format!(
            "unknown tool {other:?}; the tools are {}",
            schema::TOOL_NAMES.join(", ")
        ))),
    }
}

impl ServerHandler for CtxsyncMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        let mut info = Implementation::from_build_env();
        info.name = "ctxsync".into();
        info.version = env!("CARGO_PKG_VERSION").into();
        ServerConfig::new(capabilities)
            .with_server_info(info)
            .with_instructions(
                "ctxsync is the team's shared, versioned context. pull to read it (sections, since, budget_tokens), \
                 set/push to write (with base_revision, conflicts come back with both values), claim a task before \
                 working on it, wait for others' changes, handover when you stop. Every answer says how many \
                 revisions by others you have not seen (behind) and where (changed_sections).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tool_list().to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let arguments = request.arguments.unwrap_or_default();
        if !schema::TOOL_NAMES.contains(&name.as_str()) {
            let e = ToolError::Input(format!(
                "unknown tool {name:?}; the tools are {}",
                schema::TOOL_NAMES.join(", ")
            ));
            return Ok(error_result(&e, None).into());
        }
        let size = serde_json::to_vec(&arguments).map_or(usize::MAX, |v| v.len());
        if size > self.shared.options.max_argument_bytes {
            let e = ToolError::Input(format!(
                "the arguments are {size} bytes, over the limit of {} bytes; nothing was done",
                self.shared.options.max_argument_bytes
            ));
            return Ok(error_result(&e, None).into());
        }
        let (agent, role) = self.identity(&context);
        let ctx = match tools::context_of(&arguments, &self.shared.options.context) {
            Ok(ctx) => ctx,
            Err(e) => return Ok(error_result(&e, None).into()),
        };
        // The stale view is taken as the call starts: what others wrote since this agent
        // last looked, up to now. (Taken after, it would miss what the call itself showed
        // a remote server, which records presence on every pull and push.)
        let view = match &agent {
            Some(agent) => self.observe(&ctx, agent, u64::MAX).await,
            None => stale::StaleView::default(),
        };
        let started = std::time::Instant::now();
        let outcome = self
            .run_tool(&name, ctx, arguments, agent.clone(), role, &context)
            .await;
        tracing::debug!(tool = %name, elapsed_us = started.elapsed().as_micros() as u64, ok = outcome.is_ok(), "tool call");
        let result = match outcome {
            Ok((ctx, mut answer)) => {
                if let (Some(agent), "wait") = (&agent, name.as_str()) {
                    // What the wait returned is seen too.
                    if let Some(revision) = answer.get("revision").and_then(Value::as_u64) {
                        self.observe(&ctx, agent, revision).await;
                    }
                }
                annotate(&ctx, &view, &mut answer);
                CallToolResult::structured(answer)
            }
            Err((ctx, e)) => {
                let extra = match (&e, ctx) {
                    (ToolError::Refused { detail, .. }, Some(ctx)) => {
                        let mut d = detail.clone();
                        annotate(&ctx, &view, &mut d);
                        Some(d)
                    }
                    (_, Some(ctx)) => Some(json!({"context": ctx})),
                    _ => None,
                };
                error_result(&e, extra)
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(self).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(self, &request.uri).await.map(Into::into)
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        resources::subscribe(self, &request.uri, context.peer.clone()).await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        let uris = resources::accepted(requested.resource_subscriptions.as_deref().unwrap_or(&[]));
        let mut filter = rmcp::model::SubscriptionFilter::new();
        filter.resource_subscriptions = Some(uris);
        Some(filter)
    }

    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), ErrorData> {
        resources::listen(self, context).await;
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions.remove(&request.uri);
        Ok(())
    }
}

/// Why [`serve_stdio`] ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the MCP session could not start: {0}")]
    Start(String),
    #[error("the MCP session failed: {0}")]
    Run(String),
}

/// Serves MCP on standard input and output until the client closes them.
pub async fn serve_stdio(server: CtxsyncMcp) -> Result<(), ServeError> {
    use rmcp::ServiceExt;
    pipes::widen_stdio();
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| ServeError::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| ServeError::Run(e.to_string()))
}

/// The Streamable HTTP service for `/mcp`. The caller authenticates and puts an
/// [`Identity`] in each request's extensions, and checks `Origin`; `cancel` ends open
/// sessions and streams at shutdown.
pub fn http_service(
    server: CtxsyncMcp,
    cancel: tokio_util::sync::CancellationToken,
) -> rmcp::transport::StreamableHttpService<
    CtxsyncMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let mut config = rmcp::transport::StreamableHttpServerConfig::default()
        // The server binds where its operator says and checks Origin and the bearer
        // token itself; a Host allow-list of loopback names would refuse every client
        // reaching it by its name.
        .disable_allowed_hosts()
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    config.cancellation_token = cancel;
    // Room above the argument limit, so an oversized argument is answered as a tool
    // error result (which an agent reads) rather than a bare 413; far larger bodies are
    // still cut off by the transport.
    config.max_request_body_bytes = (server.shared.options.max_argument_bytes * 4).max(4 << 20);
    rmcp::transport::StreamableHttpService::new(
        move || Ok(server.session()),
        Default::default(),
        config,
    )
}
