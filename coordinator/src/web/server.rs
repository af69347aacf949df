//! The HTTP routes and their listener.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /metrics` | bearer token | Prometheus text (OpenMetrics when asked for) |
//! | `GET /login`, `POST /login`, `POST /logout` | anyone | the login form; a session cookie |
//! | `GET /` and `/assets/*` | session | the dashboard page |
//! | `GET /api/jobs`, `/api/jobs/{id}`, `/api/workers` | session or bearer | JSON |
//! | `GET /api/jobs/{id}/samples/{file}` | session or bearer | a sample grid (PNG) from storage |
//! | `GET /api/events` | session or bearer | server-sent events: `jobs`, `workers`, `metrics`, `checkpoint` |
//!
//! Without a session the page redirects to `/login` and the API answers 401.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use gantry_proto::pb;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::rustls::ServerConfig;

use super::auth::Auth;
use super::data::{self, History, MetricsFiles};
use crate::metrics::Metrics;
use crate::service::Coordinator;
use crate::{Error, Result};

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// How often the events stream sends what changed in the jobs table (at most).
const JOBS_PERIOD: Duration = Duration::from_millis(500);
/// How often the events stream sends the workers.
const WORKERS_PERIOD: Duration = Duration::from_secs(2);

/// Everything the routes share.
#[derive(Debug)]
pub struct Web {
    coordinator: Coordinator,
    metrics: Arc<Metrics>,
    auth: Auth,
    history: Arc<History>,
    files: MetricsFiles,
}

impl Web {
    /// The routes' state over `coordinator`; starts following its steps (for the curves).
    /// `token`: the job API token (None: open); `https`: cookies are marked `Secure`.
    pub fn new(
        coordinator: Coordinator,
        metrics: Arc<Metrics>,
        token: Option<gantry_proto::auth::Token>,
        https: bool,
    ) -> Arc<Self> {
        let history = Arc::new(History::default());
        let mut feed = coordinator.feed();
        let follower = Arc::downgrade(&history);
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(event) => {
                        let Some(history) = follower.upgrade() else { break };
                        if let pb::job_event::Event::Metrics(m) = &event.event {
                            history.record(&event.job_id, m);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "dashboard history lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Arc::new(Self {
            coordinator,
            metrics,
            auth: Auth::new(token, https),
            history,
            files: MetricsFiles::default(),
        })
    }

    /// The router.
    pub fn router(self: &Arc<Self>) -> Router {
        let private = Router::new()
            .route("/", get(index))
            .route(
                "/assets/app.js",
                get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
            )
            .route("/assets/app.css", get(|| asset(APP_CSS, "text/css; charset=utf-8")))
            .route("/api/jobs", get(list_jobs))
            .route("/api/jobs/{id}", get(job_detail))
            .route("/api/jobs/{id}/samples/{file}", get(sample))
            .route("/api/workers", get(list_workers))
            .route("/api/events", get(events))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_session));
        Router::new()
            .route("/login", get(login_page).post(login))
            .route("/logout", post(logout))
            .route("/metrics", get(metrics))
            .merge(private)
            .layer(middleware::map_response(security_headers))
            .with_state(self.clone())
    }
}

/// Serves `web` on `listener` (HTTPS with `tls`) until `shutdown` resolves.
pub async fn serve(
    web: Arc<Web>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = web.router();
    let served = match tls {
        Some(config) => {
            let listener = super::tls::TlsListener::new(listener, config).map_err(|e| Error::Http(e.to_string()))?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    };
    served.map_err(|e| Error::Http(e.to_string()))
}

/// Serves `GET /metrics` alone, without a token, on `listener` (plain HTTP), until the task is
/// dropped: for scrapers on a network of their own. The families hold aggregates only (no job
/// names or ids).
pub async fn serve_metrics(metrics: Arc<Metrics>, listener: TcpListener) -> Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let metrics = metrics.clone();
            async move { metrics_text(&metrics, &headers) }
        }),
    );
    axum::serve(listener, app).await.map_err(|e| Error::Http(e.to_string()))
}

/// The Prometheus text, or OpenMetrics when the scraper asks for it.
fn metrics_text(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, text) = metrics.respond(accept);
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn require_session(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    if web.auth.session(request.headers()) {
        return next.run(request).await;
    }
    if request.uri().path() == "/" {
        Redirect::to("/login").into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "log in first (/login), or send Authorization: Bearer <job API token>" })),
        )
            .into_response()
    }
}

fn asset(text: &'static str, content_type: &'static str) -> impl Future<Output = Response> {
    std::future::ready(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

fn login_html(error: &str) -> Response {
    let page = LOGIN_HTML.replace("{{error}}", error);
    let mut response = Html(page).into_response();
    // The form's own styles are inline.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn login_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if web.auth.required() && web.auth.session(&headers) {
        return Redirect::to("/").into_response();
    }
    login_html("")
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(web): State<Arc<Web>>, Form(form): Form<LoginForm>) -> Response {
    match web.auth.login(&form.token) {
        Some(cookie) => {
            tracing::info!("dashboard login");
            let mut response = Redirect::to("/").into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        None => {
            tracing::warn!("dashboard login refused: wrong token");
            let mut response = login_html(r#"<p class="error" id="login-error">Wrong token.</p>"#);
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let cookie = web.auth.logout(&headers);
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

async fn metrics(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if !web.auth.bearer(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send Authorization: Bearer <job API token>\n",
        )
            .into_response();
    }
    metrics_text(&web.metrics, &headers)
}

async fn list_jobs(State(web): State<Arc<Web>>) -> axum::Json<Value> {
    axum::Json(web.coordinator.read(data::jobs))
}

async fn list_workers(State(web): State<Arc<Web>>) -> axum::Json<Value> {
    axum::Json(
        web.coordinator
            .read(|core| data::workers(&core.workers(Instant::now()))),
    )
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": format!("no job {id}") })),
    )
        .into_response()
}

async fn job_detail(State(web): State<Arc<Web>>, Path(id): Path<String>) -> Response {
    let read = web.coordinator.read(|core| {
        let record = core.job(&id).ok()?.clone();
        let view = core.view(&id).ok()?;
        let workers = core.workers(Instant::now());
        Some((record, view, workers))
    });
    let Some((record, view, workers)) = read else {
        return not_found(&id);
    };
    let output = record.config.output.url.clone();
    let mut problems = Vec::new();
    let file = match web.files.read(&output).await {
        Ok(steps) => steps,
        Err(e) => {
            problems.push(format!(
                "{output}/{}: {}",
                base::layout::METRICS_FILE,
                base::error_chain(&e)
            ));
            Arc::default()
        }
    };
    let last = file.last().map_or(0, |m| m.step);
    let live = web.history.after(&id, last);
    let steps: Vec<&pb::StepMetrics> = file.iter().chain(live.iter()).collect();
    let evaluations: Vec<Value> = steps
        .iter()
        .filter_map(|m| m.evaluation.as_ref())
        .map(data::evaluation)
        .collect();
    let points: Vec<Value> = data::thin(&steps, data::MAX_POINTS)
        .into_iter()
        .map(data::point)
        .collect();
    let sample = match data::latest_sample(&output).await {
        Ok(sample) => sample,
        Err(e) => {
            problems.push(format!("{output}/samples: {}", base::error_chain(&e)));
            None
        }
    };
    axum::Json(json!({
        "job": data::summary(&record, &view),
        "ranks": data::ranks(&record, &workers),
        "points": points,
        "steps_total": steps.len(),
        "evaluations": evaluations,
        "sample": sample.map(|(file, step)| json!({
            "step": step,
            "url": format!("/api/jobs/{id}/samples/{file}"),
        })),
        "problems": problems,
    }))
    .into_response()
}

async fn sample(State(web): State<Arc<Web>>, Path((id, file)): Path<(String, String)>) -> Response {
    let Some(output) = web
        .coordinator
        .read(|core| core.job(&id).ok().map(|r| r.config.output.url.clone()))
    else {
        return not_found(&id);
    };
    if base::layout::sample_step(&file).is_none() {
        return (StatusCode::NOT_FOUND, "not a sample grid\n").into_response();
    }
    let read = async {
        base::Location::parse(&output)?
            .join(base::layout::SAMPLES)
            .get_opt(&file)
            .await
    };
    match read.await {
        Ok(Some(png)) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            png,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such sample grid\n").into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{}\n", base::error_chain(&e))).into_response(),
    }
}

fn sse(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// Live updates: `jobs` (the table) and `workers` at once and whenever they change (at most
/// every [`JOBS_PERIOD`] / [`WORKERS_PERIOD`]), `metrics` (a job's new steps, batched) and
/// `checkpoint` as they come.
async fn events(State(web): State<Arc<Web>>) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let mut feed = web.coordinator.feed();
    let mut generation = web.coordinator.generation();
    tokio::spawn(async move {
        let jobs = |web: &Web| sse("jobs", &web.coordinator.read(data::jobs));
        let workers = |web: &Web| {
            let list = web.coordinator.read(|core| core.workers(Instant::now()));
            sse("workers", &data::workers(&list))
        };
        if tx.send(Ok(jobs(&web))).await.is_err() || tx.send(Ok(workers(&web))).await.is_err() {
            return;
        }
        let mut jobs_tick = tokio::time::interval(JOBS_PERIOD);
        let mut workers_tick = tokio::time::interval(WORKERS_PERIOD);
        jobs_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        workers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changed = false;
        let mut steps: HashMap<String, Vec<Value>> = HashMap::new();
        loop {
            let mut out = Vec::new();
            tokio::select! {
                received = feed.recv() => match received {
                    Ok(event) => match &event.event {
                        pb::job_event::Event::Metrics(m) => {
                            steps.entry(event.job_id.clone()).or_default().push(data::point(m));
                            if let Some(e) = &m.evaluation {
                                out.push(sse("evaluation", &json!({ "job_id": event.job_id, "evaluation": data::evaluation(e) })));
                            }
                            changed = true;
                        }
                        pb::job_event::Event::Checkpoint(c) => {
                            out.push(sse("checkpoint", &json!({ "job_id": event.job_id, "step": c.step, "url": c.url })));
                        }
                        pb::job_event::Event::Job(_) => changed = true,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        changed = true;
                        out.push(sse("lagged", &json!({})));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                moved = generation.changed() => {
                    if moved.is_err() {
                        break;
                    }
                    changed = true;
                }
                _ = jobs_tick.tick() => {
                    for (job_id, points) in steps.drain() {
                        out.push(sse("metrics", &json!({ "job_id": job_id, "points": points })));
                    }
                    if std::mem::take(&mut changed) {
                        out.push(jobs(&web));
                    }
                }
                _ = workers_tick.tick() => out.push(workers(&web)),
                () = tx.closed() => break,
            }
            for event in out {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Timing;
    use crate::metrics::RpcMetrics;
    use crate::store::JobStore;
    use axum::body::Body;
    use futures::StreamExt as _;
    use gantry_proto::auth::Token;
    use tower::ServiceExt as _;

    const TOKEN: &str = "s3cret-token";

    async fn web(name: &str) -> (Arc<Web>, Coordinator) {
        let store = JobStore::open(&format!("memory://web-{name}/state")).unwrap();
        let timing = Timing {
            heartbeat_timeout: Duration::from_secs(30),
        };
        let coordinator = Coordinator::recover(store, timing).await.unwrap();
        let metrics = Arc::new(Metrics::new(&coordinator, &RpcMetrics::default()));
        let token = Token::new(TOKEN, "test").unwrap();
        (Web::new(coordinator.clone(), metrics, Some(token), false), coordinator)
    }

    async fn call(web: &Arc<Web>, request: axum::http::Request<Body>) -> Response {
        web.router().oneshot(request).await.unwrap()
    }

    fn get(path: &str, headers: &[(header::HeaderName, &str)]) -> axum::http::Request<Body> {
        let mut request = axum::http::Request::get(path);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request.body(Body::empty()).unwrap()
    }

    fn login_form(token: &str) -> axum::http::Request<Body> {
        axum::http::Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn location(response: &Response) -> &str {
        response.headers()[header::LOCATION].to_str().unwrap()
    }

    #[tokio::test]
    async fn nothing_is_readable_without_the_token_and_a_login_opens_a_session() {
        let (web, _) = web("auth").await;
        // No session: the page redirects to the form; the API, the assets, the events refuse.
        let page = call(&web, get("/", &[])).await;
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&page), "/login");
        for path in [
            "/api/jobs",
            "/api/workers",
            "/api/events",
            "/api/jobs/job-000001",
            "/assets/app.js",
        ] {
            let refused = call(&web, get(path, &[])).await;
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let forged = call(&web, get("/api/jobs", &[(header::COOKIE, "gantry_session=abcd")])).await;
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
        let form = call(&web, get("/login", &[])).await;
        assert_eq!(form.status(), StatusCode::OK);
        assert!(body_text(form).await.contains("name=\"token\""));

        // A wrong token: refused, no cookie.
        let wrong = call(&web, login_form("nope")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert!(wrong.headers().get(header::SET_COOKIE).is_none());
        assert!(body_text(wrong).await.contains("Wrong token."));

        // The token: a session cookie that opens everything.
        let ok = call(&web, login_form(TOKEN)).await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&ok), "/");
        let set = ok.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let page = call(&web, get("/", &[(header::COOKIE, &cookie)])).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(body_text(page).await.contains("id=\"jobs\""));
        let jobs = call(&web, get("/api/jobs", &[(header::COOKIE, &cookie)])).await;
        assert_eq!(jobs.status(), StatusCode::OK);
        let jobs: Value = serde_json::from_str(&body_text(jobs).await).unwrap();
        assert_eq!(jobs["total"], 0);
        let js = call(&web, get("/assets/app.js", &[(header::COOKIE, &cookie)])).await;
        assert_eq!(js.status(), StatusCode::OK);
        assert!(
            js.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );

        // The events stream starts with the jobs table and the workers.
        let events = call(&web, get("/api/events", &[(header::COOKIE, &cookie)])).await;
        assert_eq!(events.status(), StatusCode::OK);
        assert!(
            events.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut stream = events.into_body().into_data_stream();
        let mut seen = String::new();
        while !(seen.contains("event: jobs") && seen.contains("event: workers")) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event")
                .unwrap()
                .unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }

        // A script may use the bearer header instead.
        let bearer = format!("Bearer {TOKEN}");
        let scripted = call(&web, get("/api/workers", &[(header::AUTHORIZATION, &bearer)])).await;
        assert_eq!(scripted.status(), StatusCode::OK);

        // Logging out ends the session.
        let out = axum::http::Request::post("/logout")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        let out = call(&web, out).await;
        assert_eq!(location(&out), "/login");
        assert!(
            out.headers()[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        let after = call(&web, get("/api/jobs", &[(header::COOKIE, &cookie)])).await;
        assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn metrics_need_the_bearer_token_and_hold_every_family() {
        let (web, coordinator) = web("metrics").await;
        coordinator
            .apply(|core| {
                let config = gantry_job::JobConfig::from_toml(
                    "[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n",
                    "t",
                )
                .unwrap();
                Ok(core.submit(config).id)
            })
            .await
            .unwrap();
        assert_eq!(
            call(&web, get("/metrics", &[])).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let wrong = call(&web, get("/metrics", &[(header::AUTHORIZATION, "Bearer nope")])).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        // A session cookie is not enough for /metrics: it is for scrapers.
        let bearer = format!("Bearer {TOKEN}");
        let scraped = call(&web, get("/metrics", &[(header::AUTHORIZATION, &bearer)])).await;
        assert_eq!(scraped.status(), StatusCode::OK);
        assert_eq!(
            scraped.headers()[header::CONTENT_TYPE],
            base::exposition::PROMETHEUS_TEXT
        );
        let text = body_text(scraped).await;
        for needle in [
            "# TYPE gantry_jobs gauge",
            "gantry_jobs{state=\"queued\"} 1",
            "gantry_jobs{state=\"running\"} 0",
            "gantry_queue_length 1",
            "# TYPE gantry_queue_oldest_wait_seconds gauge",
            "gantry_workers_registered 0",
            "gantry_workers_busy 0",
            "gantry_workers_lost_total 0",
            "gantry_job_restarts_total 0",
            "gantry_job_preemptions_total 0",
            "# TYPE gantry_queue_wait_seconds histogram",
            "gantry_queue_wait_seconds_count 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        let openmetrics = call(
            &web,
            get(
                "/metrics",
                &[
                    (header::AUTHORIZATION, &bearer),
                    (header::ACCEPT, "application/openmetrics-text; version=1.0.0"),
                ],
            ),
        )
        .await;
        assert_eq!(
            openmetrics.headers()[header::CONTENT_TYPE],
            base::exposition::OPENMETRICS_TEXT
        );
        assert!(body_text(openmetrics).await.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn a_job_view_reads_its_curves_and_latest_sample_grid_from_storage() {
        let (web, coordinator) = web("detail").await;
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("run");
        std::fs::create_dir_all(output.join("samples")).unwrap();
        let lines: Vec<String> = (1..=4)
            .map(|step| {
                let mut m = pb::StepMetrics {
                    step,
                    c_loss: -(step as f64),
                    ..Default::default()
                };
                if step == 4 {
                    m.evaluation = Some(pb::Evaluation {
                        step,
                        accuracy: 0.75,
                        ..Default::default()
                    });
                }
                serde_json::to_string(&m).unwrap()
            })
            .collect();
        std::fs::write(output.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
        std::fs::write(output.join("samples/step-0000002.png"), b"\x89PNG two").unwrap();
        std::fs::write(output.join("samples/step-0000004.png"), b"\x89PNG four").unwrap();
        let toml = format!(
            "[data]\nurl = \"memory://d\"\n[output]\nurl = \"{}\"\n[job]\nname = \"viewed\"\n",
            output.display()
        );
        let id = coordinator
            .apply(|core| Ok(core.submit(gantry_job::JobConfig::from_toml(&toml, "t").unwrap()).id))
            .await
            .unwrap();
        // Steps reported live after the file's last one follow it.
        web.history.record(
            &id,
            &pb::StepMetrics {
                step: 5,
                ..Default::default()
            },
        );
        let bearer = format!("Bearer {TOKEN}");
        let auth = [(header::AUTHORIZATION, bearer.as_str())];
        let detail = call(&web, get(&format!("/api/jobs/{id}"), &auth)).await;
        assert_eq!(detail.status(), StatusCode::OK);
        let detail: Value = serde_json::from_str(&body_text(detail).await).unwrap();
        assert_eq!(detail["job"]["name"], "viewed");
        assert_eq!(detail["job"]["state"], "QUEUED");
        let steps: Vec<u64> = detail["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5]);
        assert_eq!(detail["points"][2][1], -3.0);
        assert_eq!(detail["evaluations"][0]["accuracy"], 0.75);
        assert_eq!(detail["sample"]["step"], 4);
        let url = detail["sample"]["url"].as_str().unwrap().to_string();
        assert_eq!(url, format!("/api/jobs/{id}/samples/step-0000004.png"));
        assert!(detail["problems"].as_array().unwrap().is_empty(), "{detail}");

        let png = call(&web, get(&url, &auth)).await;
        assert_eq!(png.status(), StatusCode::OK);
        assert_eq!(png.headers()[header::CONTENT_TYPE], "image/png");
        let bytes = axum::body::to_bytes(png.into_body(), 1 << 20).await.unwrap();
        assert_eq!(&bytes[..], b"\x89PNG four");
        let sneaky = call(&web, get(&format!("/api/jobs/{id}/samples/..%2Fmetrics.jsonl"), &auth)).await;
        assert_eq!(sneaky.status(), StatusCode::NOT_FOUND);
        let unknown = call(&web, get("/api/jobs/job-999999", &auth)).await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }
}
