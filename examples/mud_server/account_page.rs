//! The session-management page: `GET /account/sessions` lists the caller's sessions (device,
//! IP, client type, created and last-active times, the current one marked) with buttons to
//! revoke one session and to sign out everywhere else. A small login form at `/account/login`
//! gets a browser a cookie session.
//!
//! Every action is a same-origin HTML form `POST` carrying the session's CSRF token
//! ([`Session::csrf_token`]); the cookie itself is `SameSite=Lax`, so cross-site forms do not
//! carry it either.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::format_description;
use tower_session_auth::{AuthUser, ClientInfo, Session, SessionId, SessionRecord};

use super::{AppState, check_credentials};

const PAGE: &str = "/account/sessions";

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    remember: Option<String>,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn login_page() -> Html<String> {
    Html(login_html(None))
}

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let user = match check_credentials(&state, &form.username, &form.password).await {
        Ok(user) => user,
        Err(message) => {
            return (StatusCode::UNAUTHORIZED, Html(login_html(Some(message)))).into_response();
        }
    };
    let mut client = ClientInfo::from_headers(&headers);
    client.ip = session.client_ip();
    if client.client_type == "unknown" {
        client.client_type = "web".to_owned();
    }
    match session
        .login_with(user.id, client, form.remember.is_some())
        .await
    {
        Ok(_) => Redirect::to(PAGE).into_response(),
        Err(error) => error.into_response(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    session: Session,
) -> Response {
    let Some(user) = user else {
        return Redirect::to("/account/login").into_response();
    };
    let (Some(csrf), Ok(sessions)) = (
        session.csrf_token(),
        state.manager.list_for_user(user.user_id).await,
    ) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Session store unavailable",
        )
            .into_response();
    };
    Html(sessions_html(&user, &sessions, &csrf)).into_response()
}

pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.verify_csrf_token(&form.csrf) {
        return csrf_failure();
    }
    if let Ok(id) = id.parse::<SessionId>() {
        if let Err(error) = state.manager.revoke(user.user_id, id).await {
            return error.into_response();
        }
    }
    Redirect::to(PAGE).into_response()
}

pub async fn revoke_others(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.verify_csrf_token(&form.csrf) {
        return csrf_failure();
    }
    match state
        .manager
        .revoke_others(user.user_id, user.session_id)
        .await
    {
        Ok(_) => Redirect::to(PAGE).into_response(),
        Err(error) => error.into_response(),
    }
}

pub async fn logout(_user: AuthUser, session: Session, Form(form): Form<CsrfForm>) -> Response {
    if !session.verify_csrf_token(&form.csrf) {
        return csrf_failure();
    }
    match session.logout().await {
        Ok(_) => Redirect::to("/account/login").into_response(),
        Err(error) => error.into_response(),
    }
}

fn csrf_failure() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(layout(
            "Request refused",
            "<p class=\"error\">This form has expired or did not come from this site. \
             <a href=\"/account/sessions\">Reload the page</a> and try again.</p>",
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

fn sessions_html(user: &AuthUser, sessions: &[SessionRecord], csrf: &str) -> String {
    let csrf_field = format!("<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">");
    let mut rows = String::new();
    for record in sessions {
        let current = record.id == user.session_id;
        let action = if current {
            "<span class=\"badge\">This device</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/account/sessions/{id}/revoke\">{csrf_field}\
                 <button type=\"submit\" class=\"revoke\" data-session=\"{id}\">Revoke</button>\
                 </form>",
                id = record.id
            )
        };
        rows.push_str(&format!(
            "<tr data-session=\"{id}\"{class}><td>{device}{remembered}</td><td>{ip}</td>\
             <td>{client}</td><td>{created}</td><td>{active}</td><td>{action}</td></tr>",
            id = record.id,
            class = if current { " class=\"current\"" } else { "" },
            device = escape(&device(record.user_agent.as_deref())),
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
         <tbody>{rows}</tbody></table>\
         <div class=\"actions\">\
         <form method=\"post\" action=\"/account/sessions/revoke-others\">{csrf_field}\
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
    );
    layout("Your sessions", &body)
}

fn login_html(error: Option<&str>) -> String {
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
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form>"
        ),
    )
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · MUD account</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    )
}

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
";
