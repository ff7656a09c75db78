// Sign-in: posts the form to POST /login itself, so a wrong password shows a clear message
// on this page (without the script the form still posts, and the server answers with a
// page of its own). A same-origin fetch carries `Sec-Fetch-Site: same-origin`, the proof
// POST /login asks for (dashboard/login_guard.py).

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

function showError(nb, en) {
  error.querySelector('[lang="nb"]').textContent = nb;
  error.querySelector('[lang="en"]').textContent = en;
  error.hidden = false;
  document.getElementById("password").value = "";
  document.getElementById("password").focus();
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const username = form.username.value.trim();
  if (!username || !form.password.value) {
    showError("Skriv inn brukernavn og passord.", "Enter username and password.");
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const response = await fetch("/login", {
      method: "POST",
      body: new URLSearchParams({ username, password: form.password.value }),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      redirect: "follow",
    });
    if (response.ok && response.redirected) {
      window.location.assign(response.url);
      return;
    }
    const wait = Math.max(1, parseInt(response.headers.get("Retry-After") || "1", 10) || 1);
    if (response.status === 401 || response.status === 422) {
      showError("Feil brukernavn eller passord.", "Wrong username or password.");
    } else if (response.status === 429) {
      showError(`For mange mislykkede forsøk. Vent ${wait} ${wait === 1 ? "sekund" : "sekunder"} og prøv igjen.`,
        `Too many failed attempts. Wait ${wait} ${wait === 1 ? "second" : "seconds"} and try again.`);
    } else if (response.status === 403) {
      showError("Innlogging godtas bare fra Tryggs egen innloggingsside. Last siden på nytt og prøv igjen.",
        "Sign-in is only accepted from Trygg's own sign-in page. Reload the page and try again.");
    } else if (response.status === 503 && wait <= 5) {
      showError("Innlogging er travel akkurat nå. Prøv igjen om litt.", "Signing in is busy. Try again shortly.");
    } else {
      showError("Innlogging er ikke tilgjengelig akkurat nå. Prøv igjen om litt.",
        "Signing in is not available right now. Try again shortly.");
    }
  } catch {
    showError("Får ikke kontakt med Trygg. Sjekk nettverket og prøv igjen.",
      "Cannot reach Trygg. Check the network and try again.");
  } finally {
    button.disabled = false;
  }
});
