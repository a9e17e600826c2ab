//! The session-management page: `GET /account/sessions` lists the caller's sessions (device,
//! IP, client type, created and last-active times, the current one marked) with buttons to
//! revoke one session and to sign out everywhere else. A small login form at `/account/login`
//! gets a browser a cookie session.
//!
//! Every action is a same-origin HTML form `POST` carrying the session's CSRF token
//! ([`Session::csrf_token`]), and the crate's `CsrfConfig` checks its `Origin`; the cookie
//! itself is `SameSite=Lax`, so cross-site forms do not carry it either.
//!
//! The login form has no session yet to bind a token to, so it uses a double-submit token: the
//! form page sets a random value in a `SameSite=Strict` cookie scoped to `/account/login` (over
//! HTTPS a `__Host-` cookie, which a sibling subdomain cannot set or shadow) and repeats it in
//! a hidden field, and the post must carry both, equal. The post must also come
//! from this origin by `Sec-Fetch-Site` / `Origin` (which also refuses a sibling subdomain that
//! could plant the cookie). So a page elsewhere cannot sign a visitor into another account.
//!
//! Signing other devices out needs recent authentication (sudo mode): when this session's
//! password entry is older than the window, or the session came from a remember-me refresh,
//! the page asks for the password in the same forms, and the post re-authenticates the
//! session (throttled like the login) before it acts. A wrong password changes nothing.
//!
//! `GET /account/game` is the game in the browser: its script, a file of this origin
//! (`/account/game.js`), opens `/game/ws` with the session cookie (so the selected character
//! plays), shows the room's lines, and says why when the socket closes: "Signed out: session
//! revoked" for the close code 4001. The other pages send no script at all; the stylesheet is
//! a file of this origin too, so the `Content-Security-Policy` allows nothing inline, and only
//! the game page's policy allows a script and a connection, both to this origin.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::format_description;
use tower_session_auth::{
    AuthRejection, AuthUser, LoginOptions, Session, SessionId, store::SessionRecord,
};

use super::login_guard::LoginRefusal;
use super::{AppState, check_credentials, drops_refresh_cookie, refuses_cross_site};

const PAGE: &str = "/account/sessions";
const LOGIN: &str = "/account/login";
/// The double-submit cookie of the login form, and its path. Over HTTPS it is a `__Host-`
/// cookie (so `Path=/`): a sibling subdomain can set a `login_csrf` cookie for the parent
/// domain, and a second cookie of the same name would make every post ambiguous (refused), so
/// the form could never be used; it cannot set a `__Host-` one.
fn login_csrf_cookie(secure: bool) -> (&'static str, &'static str) {
    if secure {
        ("__Host-login_csrf", "/")
    } else {
        ("login_csrf", LOGIN)
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    remember: Option<String>,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// The form of an action on other devices: the CSRF token, and the password when the page
/// asked for it.
#[derive(Deserialize)]
pub struct SensitiveForm {
    csrf: String,
    #[serde(default)]
    password: Option<String>,
}

/// The login form. It reuses the browser's double-submit token when it has a well-formed one
/// (so two open tabs both work), else makes a new one.
pub async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let secure = state.manager.config().cookie.secure;
    let (name, path) = login_csrf_cookie(secure);
    let token = presented_login_token(&headers, name).unwrap_or_else(|| {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's CSPRNG");
        URL_SAFE_NO_PAD.encode(bytes)
    });
    let cookie = format!(
        "{name}={token}; HttpOnly; SameSite=Strict; Path={path}{secure}",
        secure = if secure { "; Secure" } else { "" }
    );
    let mut response = Html(login_html(&token, None)).into_response();
    if let Ok(cookie) = HeaderValue::try_from(cookie) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// The double-submit token the browser sent, if it is one this server could have made.
fn presented_login_token(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for cookie in cookie::Cookie::split_parse(header).flatten() {
            if cookie.name() == name {
                if found.is_some() {
                    return None; // twice: ambiguous
                }
                found = Some(cookie.value().to_owned());
            }
        }
    }
    found.filter(|token| {
        token.len() == 43 && URL_SAFE_NO_PAD.decode(token).is_ok_and(|b| b.len() == 32)
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (name, _) = login_csrf_cookie(state.manager.config().cookie.secure);
    let token = presented_login_token(&headers, name);
    let token_ok = token
        .as_deref()
        .is_some_and(|token| constant_time_eq(token.as_bytes(), form.csrf.as_bytes()));
    if refuses_cross_site(&session, &headers) || !token_ok {
        return csrf_failure(LOGIN);
    }
    let token = token.unwrap_or_default();
    let user = match check_credentials(&state, &session, &form.username, &form.password).await {
        Ok(user) => user,
        Err(refusal) => return login_refused(&token, refusal),
    };
    let mut client = session.client_info();
    if client.client_type == "unknown" {
        client = client.with_client_type("web");
    }
    let remember = form.remember.is_some();
    match session
        .login(
            user.id,
            LoginOptions::new().client(client).remember(remember),
        )
        .await
    {
        Ok(_) => {
            let mut response = Redirect::to(PAGE).into_response();
            if drops_refresh_cookie(&session, remember) {
                response
                    .headers_mut()
                    .append(SET_COOKIE, state.manager.refresh_removal_cookie());
            }
            response
        }
        Err(rejection) => refused(rejection, LOGIN),
    }
}

/// A page for a crate rejection: the CSRF refusal, or a server error.
fn refused(rejection: AuthRejection, back: &str) -> Response {
    match rejection {
        AuthRejection::CrossSiteRequest => csrf_failure(back),
        _ => server_error(),
    }
}

/// The login form again, with the refusal's message, status and `Retry-After`.
fn login_refused(token: &str, refusal: LoginRefusal) -> Response {
    if refusal == LoginRefusal::StoreUnavailable {
        return server_error();
    }
    let mut response = (
        refusal.status(),
        Html(login_html(token, Some(refusal.detail()))),
    )
        .into_response();
    if let Some(secs) = refusal.retry_after() {
        response.headers_mut().insert(RETRY_AFTER, secs.into());
    }
    response
}

fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html(layout(
            "Something went wrong",
            "<p class=\"error\">The server could not complete this request. \
             Please try again in a moment.</p>",
        )),
    )
        .into_response()
}

pub async fn page(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    session: Session,
) -> Response {
    let Some(user) = user else {
        return Redirect::to(LOGIN).into_response();
    };
    let (Some(csrf), Ok(sessions)) = (
        session.csrf_token(),
        state.manager.list_for_user(user.user_id).await,
    ) else {
        return server_error();
    };
    let recent = session.require_recent_auth().await.is_ok();
    let live = |id| state.manager.is_watched(id);
    Html(sessions_html(&user, &sessions, &csrf, recent, &live)).into_response()
}

/// Sudo mode for the page's actions on other devices: passes when this session was
/// authenticated recently; otherwise checks the password the form carried (throttled and
/// bounded like the login) and re-authenticates the session, or answers with a page that
/// says why nothing happened.
async fn confirm_recent(
    state: &AppState,
    user: &AuthUser,
    session: &Session,
    password: Option<&str>,
) -> Result<(), Response> {
    match session.require_recent_auth().await {
        Ok(_) => return Ok(()),
        Err(AuthRejection::RecentAuthRequired { .. }) => {}
        Err(rejection) => return Err(refused(rejection, PAGE)),
    }
    let Some(password) = password.filter(|password| !password.is_empty()) else {
        return Err(password_page(
            StatusCode::FORBIDDEN,
            "Enter your password to sign out other devices.",
            None,
        ));
    };
    if let Err(refusal) = check_credentials(state, session, &user.username, password).await {
        return Err(password_page(
            refusal.status(),
            refusal.detail(),
            refusal.retry_after(),
        ));
    }
    match session.reauthenticate().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Redirect::to(LOGIN).into_response()),
        Err(rejection) => Err(refused(rejection, PAGE)),
    }
}

/// Why an action on other devices did not happen, with the way back to the page.
fn password_page(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response {
    let mut response = (
        status,
        Html(layout(
            "Confirm your password",
            &format!(
                "<p class=\"error\">{}</p><p><a href=\"{PAGE}\">Back to your sessions</a></p>",
                escape(message)
            ),
        )),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(RETRY_AFTER, secs.into());
    }
    response
}

/// Revokes one of the user's sessions; revoking this browser's own is a sign-out, another's
/// needs recent authentication.
pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<SensitiveForm>,
) -> Response {
    if !session.verify_csrf_token(&form.csrf) {
        return csrf_failure(PAGE);
    }
    let Ok(id) = id.parse::<SessionId>() else {
        return Redirect::to(PAGE).into_response();
    };
    if id != user.session_id {
        if let Err(response) =
            confirm_recent(&state, &user, &session, form.password.as_deref()).await
        {
            return response;
        }
    }
    // The page sends a browser whose own session this was to the login form.
    match session.revoke(user.user_id, id).await {
        Ok(_) => Redirect::to(PAGE).into_response(),
        Err(rejection) => refused(rejection, PAGE),
    }
}

pub async fn revoke_others(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    Form(form): Form<SensitiveForm>,
) -> Response {
    if !session.verify_csrf_token(&form.csrf) {
        return csrf_failure(PAGE);
    }
    if let Err(response) = confirm_recent(&state, &user, &session, form.password.as_deref()).await {
        return response;
    }
    match state
        .manager
        .revoke_others(user.user_id, user.session_id)
        .await
    {
        Ok(_) => Redirect::to(PAGE).into_response(),
        Err(error) => {
            tracing::error!(%error, "revoking the other sessions failed");
            server_error()
        }
    }
}

/// Signs out even when the session has expired meanwhile: the form token is derived from the
/// cookie, not from the stored session, so it still verifies, and the response clears the
/// cookies.
pub async fn logout(session: Session, Form(form): Form<CsrfForm>) -> Response {
    if !session.verify_csrf_token(&form.csrf) {
        return csrf_failure(PAGE);
    }
    match session.logout().await {
        Ok(_) => Redirect::to(LOGIN).into_response(),
        Err(rejection) => refused(rejection, PAGE),
    }
}

pub async fn stylesheet() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=3600")),
        ],
        STYLE,
    )
        .into_response()
}

/// The game page's policy: the example's usual one, plus this origin's script and socket.
const GAME_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The game in the browser, for a signed-in session (the socket needs a selected character).
pub async fn game_page(user: Option<AuthUser>) -> Response {
    let Some(user) = user else {
        return Redirect::to(LOGIN).into_response();
    };
    let body = format!(
        "<p>Signed in as <strong>{name}</strong>. <a href=\"{PAGE}\">Your sessions</a></p>\
         <p id=\"status\" class=\"status\" role=\"status\">Connecting…</p>\
         <ul id=\"lines\" class=\"lines\"></ul>\
         <script src=\"/account/game.js\"></script>",
        name = escape(&user.username),
    );
    (
        [(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(GAME_POLICY),
        )],
        Html(layout("Play", &body)),
    )
        .into_response()
}

pub async fn game_script() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=3600")),
        ],
        GAME_SCRIPT,
    )
        .into_response()
}

fn csrf_failure(back: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(layout(
            "Request refused",
            &format!(
                "<p class=\"error\">This form has expired or did not come from this site. \
                 <a href=\"{back}\">Reload the page</a> and try again.</p>"
            ),
        )),
    )
        .into_response()
}

/// "Firefox on Linux", "Chrome on Android", … from a User-Agent header.
fn device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) else {
        return "Unknown device".to_owned();
    };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(marker, _)| ua.contains(marker))
    .map_or_else(
        || ua.split('/').next().unwrap_or("Unknown").to_owned(),
        |(_, name)| (*name).to_owned(),
    );
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| ua.contains(marker))
    .map(|(_, name)| *name);
    match os {
        Some(os) => format!("{browser} on {os}"),
        None => browser,
    }
}

fn when(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ))
    .unwrap_or_default()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The sessions page. Unless the session was authenticated `recent`ly, the forms that act on
/// other devices ask for the password too. `live` says whether a session holds a game
/// connection on this instance.
fn sessions_html(
    user: &AuthUser,
    sessions: &[SessionRecord],
    csrf: &str,
    recent: bool,
    live: &dyn Fn(SessionId) -> bool,
) -> String {
    let csrf_field = format!("<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">");
    let password_field = if recent {
        ""
    } else {
        "<input type=\"password\" name=\"password\" class=\"confirm\" \
         placeholder=\"Your password\" aria-label=\"Your password\" \
         autocomplete=\"current-password\" required>"
    };
    let mut rows = String::new();
    for record in sessions {
        let current = record.id == user.session_id;
        let action = if current {
            "<span class=\"badge\">This device</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/account/sessions/{id}/revoke\">{csrf_field}\
                 {password_field}\
                 <button type=\"submit\" class=\"revoke\" data-session=\"{id}\">Revoke</button>\
                 </form>",
                id = record.id
            )
        };
        rows.push_str(&format!(
            "<tr data-session=\"{id}\"{class}><td>{device}{remembered}{live}</td><td>{ip}</td>\
             <td>{client}</td><td>{created}</td><td>{active}</td><td>{action}</td></tr>",
            id = record.id,
            class = if current { " class=\"current\"" } else { "" },
            device = escape(&device(record.user_agent.as_deref())),
            live = if live(record.id) {
                " <span class=\"badge live\">Live connection</span>"
            } else {
                ""
            },
            remembered = if record.remembered {
                " <small>(remembered)</small>"
            } else {
                ""
            },
            ip = record
                .ip
                .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            client = escape(&record.client_type),
            created = when(record.created_at),
            active = when(record.last_activity),
        ));
    }
    let others = sessions.len().saturating_sub(1);
    let body = format!(
        "<p>Signed in as <strong>{name}</strong> ({role}). \
         {count} active session{plural}.</p>\
         <table><thead><tr><th>Device</th><th>IP address</th><th>Client</th>\
         <th>Signed in</th><th>Last active</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table>{confirm_note}\
         <div class=\"actions\">\
         <form method=\"post\" action=\"/account/sessions/revoke-others\">{csrf_field}\
         {others_password}\
         <button type=\"submit\" id=\"revoke-others\"{disabled}>Sign out everywhere else</button>\
         </form>\
         <form method=\"post\" action=\"/account/logout\">{csrf_field}\
         <button type=\"submit\" id=\"logout\" class=\"secondary\">Sign out</button></form>\
         </div>",
        name = escape(&user.username),
        role = escape(&user.role),
        count = sessions.len(),
        plural = if sessions.len() == 1 { "" } else { "s" },
        disabled = if others == 0 { " disabled" } else { "" },
        others_password = if others == 0 { "" } else { password_field },
        confirm_note = if recent || others == 0 {
            ""
        } else {
            "<p class=\"note\" id=\"confirm-note\">To sign out other devices, enter your \
             password again: this session has not confirmed it recently.</p>"
        },
    );
    layout("Your sessions", &body)
}

fn login_html(csrf: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |message| {
        format!("<p class=\"error\">{}</p>", escape(message))
    });
    layout(
        "Sign in",
        &format!(
            "{error}<form method=\"post\" action=\"/account/login\" class=\"login\">\
             <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required></label>\
             <label class=\"inline\"><input type=\"checkbox\" name=\"remember\" value=\"1\"> \
             Remember me</label>\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form>"
        ),
    )
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · MUD account</title>\
         <link rel=\"stylesheet\" href=\"/account/style.css\"></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    )
}

/// Connects to this origin's game socket and shows its lines; a close in the private range
/// (4001 revoked, 4002 expired, 4003 user inactive or permission removed) carries the reason.
const GAME_SCRIPT: &str = r#""use strict";
(function () {
  const status = document.getElementById("status");
  const lines = document.getElementById("lines");
  const show = function (text, state) {
    status.textContent = text;
    status.dataset.state = state;
  };
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/game/ws");
  socket.addEventListener("open", function () { show("Connected", "connected"); });
  socket.addEventListener("message", function (event) {
    const line = document.createElement("li");
    line.textContent = String(event.data);
    lines.appendChild(line);
  });
  socket.addEventListener("close", function (event) {
    if (event.code >= 4000 && event.code < 5000) {
      show("Signed out: " + (event.reason || "session ended"), "signed-out");
    } else {
      show("Disconnected (select a character, then reload)", "disconnected");
    }
  });
})();
"#;

const STYLE: &str = "
body { font: 15px/1.5 system-ui, sans-serif; background: #f4f5f7; color: #1f2328; margin: 0; }
main { max-width: 60rem; margin: 3rem auto; background: #fff; padding: 2rem 2.5rem;
       border-radius: 10px; box-shadow: 0 1px 4px rgba(0,0,0,.08); }
h1 { font-size: 1.5rem; margin-top: 0; }
table { width: 100%; border-collapse: collapse; margin: 1rem 0 1.5rem; }
th, td { text-align: left; padding: .6rem .5rem; border-bottom: 1px solid #e5e7eb; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: #57606a; }
tr.current td { background: #f0f7ff; }
.badge { background: #0969da; color: #fff; border-radius: 999px; padding: .15rem .6rem;
         font-size: .8rem; white-space: nowrap; }
button { font: inherit; border: 0; border-radius: 6px; padding: .45rem .9rem; cursor: pointer;
         background: #0969da; color: #fff; }
button.revoke { background: #cf222e; }
button.secondary { background: #6e7781; }
button[disabled] { opacity: .45; cursor: default; }
.actions { display: flex; gap: .75rem; }
form { margin: 0; }
form.login { display: grid; gap: .9rem; max-width: 20rem; }
form.login input:not([type=checkbox]) { display: block; width: 100%; padding: .4rem;
         font: inherit; border: 1px solid #d0d7de; border-radius: 6px; box-sizing: border-box; }
.error { color: #cf222e; }
small { color: #57606a; }
.note { color: #57606a; }
td form { display: flex; align-items: center; }
.status { font-weight: 600; }
.status[data-state=signed-out] { color: #cf222e; }
.lines { list-style: none; padding: 0; font-family: ui-monospace, monospace; }
input.confirm { font: inherit; padding: .4rem; margin-right: .5rem; width: 11rem;
         border: 1px solid #d0d7de; border-radius: 6px; }
";
