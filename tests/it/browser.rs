//! The session-management page (`GET /account/sessions`) in a real, headless Chromium, driven
//! over WebDriver (Debian's `chromium` and `chromium-driver`, which scripts/test installs),
//! against the example server on PostgreSQL: sign in through the login form, see this device
//! and another one, revoke the other and check its token is rejected, sign out everywhere
//! else, and refuse a form post without the CSRF token; play on the game page until another
//! device signs the browser out. Screenshots are kept under `target/tmp/browser/`.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::example::{Server, schema_url};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ANDROID_UA: &str = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Mobile Safari/537.36";

fn binary(env: &str, default: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_owned()));
    assert!(
        path.exists(),
        "{} is missing: install Debian's {package} (scripts/test does) or set {env}",
        path.display()
    );
    path
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    _child: Child,
    url: String,
}

async fn start_chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary(
        "CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    ))
    .arg(format!("--port={port}"))
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("start chromedriver");
    for _ in 0..150 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Driver {
                _child: child,
                url: format!("http://127.0.0.1:{port}"),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

async fn open_browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = binary("CHROMIUM", "/usr/bin/chromium", "chromium");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1100,760",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Logs in over the JSON API, as another device would; returns the token.
async fn login_elsewhere(server: &Server, user_agent: &str) -> String {
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/login", server.base))
        .header("user-agent", user_agent)
        .header("x-requested-with", "browser-test")
        .header("x-client-type", "mobile")
        .json(&json!({"username": "player", "password": "player-pass"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["token"].as_str().unwrap().to_owned()
}

async fn me_status(server: &Server, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!("{}/me", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// The text of each row of the sessions table.
async fn try_rows(browser: &Client) -> Result<Vec<String>, fantoccini::error::CmdError> {
    let mut texts = Vec::new();
    for row in browser.find_all(Locator::Css("tbody tr")).await? {
        texts.push(row.text().await?);
    }
    Ok(texts)
}

/// Waits (a form post navigates, and a click returns before the new page is in) until the
/// page is `path` and, if given, lists `rows` sessions.
async fn wait_for(browser: &Client, path: &str, rows: Option<usize>) {
    let mut last = String::new();
    for _ in 0..100 {
        let url = browser.current_url().await.map(|url| url.path().to_owned());
        if url.as_ref().is_ok_and(|url| url == path) {
            match rows {
                None => return,
                Some(expected) => match try_rows(browser).await {
                    Ok(listed) if listed.len() == expected => return,
                    Ok(listed) => last = format!("{listed:?}"),
                    Err(error) => last = error.to_string(),
                },
            }
        } else {
            last = format!("{url:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {path} with {rows:?} sessions; last saw {last}");
}

#[tokio::test]
async fn session_management_page_in_a_real_browser() {
    let server = Server::start(Some(&schema_url().await)).await;
    let other_device = login_elsewhere(&server, ANDROID_UA).await;
    assert_eq!(
        me_status(&server, &other_device).await,
        reqwest::StatusCode::OK
    );

    let driver = start_chromedriver().await;
    let profile = tempdir();
    let browser = open_browser(&driver, &profile).await;
    let outcome = drive(&server, &browser, &other_device).await;
    let _ = browser.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    outcome.unwrap();
    server.stop().await;
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn drive(
    server: &Server,
    browser: &Client,
    other_device: &str,
) -> Result<(), fantoccini::error::CmdError> {
    let page = format!("{}/account/sessions", server.base);

    // Not signed in: the page sends the browser to the login form.
    browser.goto(&page).await?;
    wait_for(browser, "/account/login", None).await;
    browser
        .find(Locator::Css("input[name=username]"))
        .await?
        .send_keys("player")
        .await?;
    browser
        .find(Locator::Css("input[name=password]"))
        .await?
        .send_keys("player-pass")
        .await?;
    browser.find(Locator::Id("sign-in")).await?.click().await?;

    // Both devices are listed; this one is marked.
    wait_for(browser, "/account/sessions", Some(2)).await;
    let current = browser
        .find(Locator::Css("tr.current"))
        .await?
        .text()
        .await?;
    assert!(current.contains("This device"), "{current}");
    assert!(current.contains("Chrome on Linux"), "{current}");
    assert!(
        current.contains("127.0.0.1") && current.contains("web"),
        "{current}"
    );
    let other = browser
        .find(Locator::Css("tbody tr:not(.current)"))
        .await?
        .text()
        .await?;
    assert!(
        other.contains("Chrome on Android") && other.contains("mobile"),
        "{other}"
    );
    std::fs::write(
        artifacts().join("account-sessions.png"),
        browser.screenshot().await?,
    )
    .unwrap();

    // Revoke the other device: it disappears, and its token is rejected.
    browser
        .find(Locator::Css("button.revoke"))
        .await?
        .click()
        .await?;
    wait_for(browser, "/account/sessions", Some(1)).await;
    assert_eq!(
        me_status(server, other_device).await,
        reqwest::StatusCode::UNAUTHORIZED
    );

    // Sign out everywhere else.
    let third = login_elsewhere(server, "curl/8.5.0").await;
    browser.goto(&page).await?;
    wait_for(browser, "/account/sessions", Some(2)).await;
    browser
        .find(Locator::Id("revoke-others"))
        .await?
        .click()
        .await?;
    wait_for(browser, "/account/sessions", Some(1)).await;
    assert_eq!(
        me_status(server, &third).await,
        reqwest::StatusCode::UNAUTHORIZED
    );
    std::fs::write(
        artifacts().join("account-sessions-after-revoke.png"),
        browser.screenshot().await?,
    )
    .unwrap();

    // A form post without this session's CSRF token is refused and changes nothing.
    let cookie = browser.get_named_cookie("id").await?;
    let fourth = login_elsewhere(server, "curl/8.5.0").await;
    // (It names this origin, so the crate's Origin check passes and the form token decides.)
    let forged = reqwest::Client::new()
        .post(format!("{}/account/sessions/revoke-others", server.base))
        .header("origin", &server.base)
        .header("cookie", format!("id={}", cookie.value()))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(me_status(server, &fourth).await, reqwest::StatusCode::OK);

    // The page's own sign-out button ends the browser's session.
    browser.goto(&page).await?;
    browser.find(Locator::Id("logout")).await?.click().await?;
    wait_for(browser, "/account/login", None).await;
    browser.goto(&page).await?;
    wait_for(browser, "/account/login", None).await;
    Ok(())
}

/// Serves `html` at `/` on a port of its own: a page of another origin.
async fn serve_page(html: String) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, task)
}

#[tokio::test]
async fn a_form_on_another_origin_cannot_sign_a_visitor_in() {
    let server = Server::start(Some(&schema_url().await)).await;
    let driver = start_chromedriver().await;
    let profile = tempdir();
    let browser = open_browser(&driver, &profile).await;
    let outcome = cross_site_login(&server, &browser).await;
    let _ = browser.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    outcome.unwrap();
    server.stop().await;
}

async fn cross_site_login(
    server: &Server,
    browser: &Client,
) -> Result<(), fantoccini::error::CmdError> {
    // The visitor has opened the login form, so the browser holds its double-submit cookie;
    // the attacker is even given its value, so only the origin check stands in the way.
    browser
        .goto(&format!("{}/account/login", server.base))
        .await?;
    let token = browser
        .get_named_cookie("login_csrf")
        .await?
        .value()
        .to_owned();
    let form = format!(
        "<!doctype html><form method=\"post\" action=\"{}/account/login\">\
         <input name=\"username\" value=\"player\"><input name=\"password\" value=\"player-pass\">\
         <input name=\"csrf\" value=\"{token}\"><button id=\"go\">Win a prize</button></form>",
        server.base
    );
    let (port, page) = serve_page(form).await;
    // `localhost` is another site; `127.0.0.1` on another port is the same site, another origin.
    for attacker in [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        browser.goto(&attacker).await?;
        browser.find(Locator::Id("go")).await?.click().await?;
        wait_for(browser, "/account/login", None).await;
        let mut text = String::new();
        for _ in 0..100 {
            text = browser.find(Locator::Css("body")).await?.text().await?;
            if text.contains("Request refused") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(text.contains("Request refused"), "{attacker}: {text}");
        // No session cookie was set: the account page still asks the visitor to sign in.
        browser
            .goto(&format!("{}/account/sessions", server.base))
            .await?;
        wait_for(browser, "/account/login", None).await;
        assert!(
            browser.get_named_cookie("id").await.is_err(),
            "{attacker} signed the visitor in"
        );
    }
    page.abort();

    // The same form on this origin, with the same token, signs in.
    browser
        .goto(&format!("{}/account/login", server.base))
        .await?;
    browser
        .find(Locator::Css("input[name=username]"))
        .await?
        .send_keys("player")
        .await?;
    browser
        .find(Locator::Css("input[name=password]"))
        .await?
        .send_keys("player-pass")
        .await?;
    browser.find(Locator::Id("sign-in")).await?.click().await?;
    wait_for(browser, "/account/sessions", Some(1)).await;
    Ok(())
}

/// Sudo mode on the page: once the window (one second here) has passed, signing out everywhere
/// else asks for the password in the same form; a wrong one changes nothing, the right one
/// re-authenticates and signs the other device out in one post.
#[tokio::test]
async fn the_page_asks_for_the_password_when_the_login_is_not_recent() {
    let server = Server::start_with(
        Some(&schema_url().await),
        &[("SESSION_RECENT_AUTH_SECS", "1")],
    )
    .await;
    let other_device = login_elsewhere(&server, ANDROID_UA).await;
    let driver = start_chromedriver().await;
    let profile = tempdir();
    let browser = open_browser(&driver, &profile).await;
    let outcome = confirm_password(&server, &browser, &other_device).await;
    let _ = browser.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    outcome.unwrap();
    server.stop().await;
}

async fn confirm_password(
    server: &Server,
    browser: &Client,
    other_device: &str,
) -> Result<(), fantoccini::error::CmdError> {
    let page = format!("{}/account/sessions", server.base);
    browser
        .goto(&format!("{}/account/login", server.base))
        .await?;
    wait_for(browser, "/account/login", None).await;
    browser
        .find(Locator::Css("input[name=username]"))
        .await?
        .send_keys("player")
        .await?;
    browser
        .find(Locator::Css("input[name=password]"))
        .await?
        .send_keys("player-pass")
        .await?;
    browser.find(Locator::Id("sign-in")).await?.click().await?;
    wait_for(browser, "/account/sessions", Some(2)).await;
    assert!(
        browser
            .find_all(Locator::Id("confirm-note"))
            .await?
            .is_empty()
    );

    // Let the one-second window pass: the page now asks for the password.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    browser.goto(&page).await?;
    wait_for(browser, "/account/sessions", Some(2)).await;
    browser.find(Locator::Id("confirm-note")).await?;
    let password =
        Locator::Css("form[action='/account/sessions/revoke-others'] input[name=password]");
    browser.find(password).await?.send_keys("wrong").await?;
    browser
        .find(Locator::Id("revoke-others"))
        .await?
        .click()
        .await?;
    wait_for(browser, "/account/sessions/revoke-others", None).await;
    let text = browser.find(Locator::Css("main")).await?.text().await?;
    assert!(text.contains("Invalid username or password"), "{text}");
    assert_eq!(
        me_status(server, other_device).await,
        reqwest::StatusCode::OK
    );

    browser.goto(&page).await?;
    wait_for(browser, "/account/sessions", Some(2)).await;
    browser
        .find(password)
        .await?
        .send_keys("player-pass")
        .await?;
    std::fs::write(
        artifacts().join("account-sessions-confirm-password.png"),
        browser.screenshot().await?,
    )
    .unwrap();
    browser
        .find(Locator::Id("revoke-others"))
        .await?
        .click()
        .await?;
    wait_for(browser, "/account/sessions", Some(1)).await;
    assert_eq!(
        me_status(server, other_device).await,
        reqwest::StatusCode::UNAUTHORIZED
    );
    Ok(())
}

/// The game page's script connects with the session cookie; another device signs everywhere
/// else out, and the page shows that it was signed out, with the close frame's reason.
#[tokio::test]
async fn the_game_page_shows_when_another_device_signs_it_out() {
    let server = Server::start(Some(&schema_url().await)).await;
    let driver = start_chromedriver().await;
    let profile = tempdir();
    let browser = open_browser(&driver, &profile).await;
    let outcome = play_until_signed_out(&server, &browser).await;
    let _ = browser.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    outcome.unwrap();
    server.stop().await;
}

/// Waits until the game page's status reads `expected`; returns the page's text.
async fn wait_for_status(
    browser: &Client,
    expected: &str,
) -> Result<String, fantoccini::error::CmdError> {
    let mut text = String::new();
    for _ in 0..100 {
        text = browser.find(Locator::Id("status")).await?.text().await?;
        if text == expected {
            return browser.find(Locator::Css("main")).await?.text().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected the status {expected:?}; last saw {text:?}");
}

async fn play_until_signed_out(
    server: &Server,
    browser: &Client,
) -> Result<(), fantoccini::error::CmdError> {
    browser
        .goto(&format!("{}/account/game", server.base))
        .await?;
    wait_for(browser, "/account/login", None).await;
    browser
        .find(Locator::Css("input[name=username]"))
        .await?
        .send_keys("player")
        .await?;
    browser
        .find(Locator::Css("input[name=password]"))
        .await?
        .send_keys("player-pass")
        .await?;
    browser.find(Locator::Id("sign-in")).await?.click().await?;
    wait_for(browser, "/account/sessions", Some(1)).await;

    // The browser's session selects the player's character (as a game client would).
    let cookie = browser.get_named_cookie("id").await?.value().to_owned();
    let characters: Value = reqwest::Client::new()
        .get(format!("{}/characters", server.base))
        .header("cookie", format!("id={cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let selected = reqwest::Client::new()
        .post(format!("{}/characters/select", server.base))
        .header("cookie", format!("id={cookie}"))
        .header("origin", &server.base)
        .header("x-requested-with", "browser-test")
        .json(&json!({ "character_id": characters[0]["id"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(selected.status(), reqwest::StatusCode::OK);
    // Only the game page's policy allows a script and a socket, both of this origin.
    let page = reqwest::Client::new()
        .get(format!("{}/account/game", server.base))
        .header("cookie", format!("id={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["content-security-policy"],
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let script = reqwest::get(format!("{}/account/game.js", server.base))
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        script.headers()["content-security-policy"],
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'"
    );

    browser
        .goto(&format!("{}/account/game", server.base))
        .await?;
    let text = wait_for_status(browser, "Connected").await?;
    assert!(text.contains("Welcome,"), "{text}");
    std::fs::write(
        artifacts().join("game-connected.png"),
        browser.screenshot().await?,
    )
    .unwrap();

    // Another device, just signed in, signs out everywhere else.
    let other_device = login_elsewhere(server, ANDROID_UA).await;
    let revoked = reqwest::Client::new()
        .delete(format!("{}/sessions", server.base))
        .bearer_auth(&other_device)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), reqwest::StatusCode::OK);
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(revoked["revoked"], 1);

    let text = wait_for_status(browser, "Signed out: session revoked").await?;
    assert!(text.contains("Welcome,"), "{text}");
    std::fs::write(
        artifacts().join("game-signed-out.png"),
        browser.screenshot().await?,
    )
    .unwrap();
    // The page's session is gone: reloading it asks the browser to sign in.
    browser
        .goto(&format!("{}/account/game", server.base))
        .await?;
    wait_for(browser, "/account/login", None).await;
    Ok(())
}
