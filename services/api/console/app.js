// The console's shell: sign-in with the server key, navigation, the organization picker and
// the page router (pages live in the URL's fragment: #/users, #/users/<id>, #/tasks, …).

import { ApiError, get, session } from './api.js';
import { h, fill, problemView, showError, clearError, errorBox } from './ui.js';
import { usersPage } from './users.js';
import { userPage } from './user.js';
import { tasksPage } from './tasks.js';
import { eventsPage, projectionsPage, settingsPage } from './ops.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const orgForm = document.getElementById('org-form');
const orgInput = document.getElementById('org-input');

const routes = [
  [/^#\/users\/([^?]+)/, (ctx, m) => userPage(ctx, decodeURIComponent(m[1]))],
  [/^#\/tasks/, tasksPage],
  [/^#\/events/, eventsPage],
  [/^#\/projections/, projectionsPage],
  [/^#\/settings/, settingsPage],
  [/^(#\/users)?/, usersPage],
];

let current = null;

/** Shows the page the fragment names; the previous page's streams stop. */
async function route() {
  if (!session.key) return signIn();
  current?.abort();
  const controller = new AbortController();
  current = controller;
  clearError();
  const hash = location.hash || '#/users';
  for (const link of nav.querySelectorAll('a')) {
    const here = hash.startsWith(link.getAttribute('href'));
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const [pattern, render] = routes.find(([p]) => p.test(hash));
  const match = hash.match(pattern);
  const params = new URLSearchParams(hash.split('?')[1] || '');
  fill(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await render({ main, signal: controller.signal, params }, match);
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) return signOut(error);
    fill(main, h('h1', { tabindex: -1 }, 'This page could not be shown'),
      h('div', { class: 'problem' }, problemView(error)));
  }
  // Focus moves to the new page's heading, as after a page load.
  const heading = main.querySelector('h1');
  if (heading && !controller.signal.aborted) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

/** Asks for the server API key; keeps it in this tab's sessionStorage once the server accepts it. */
function signIn(reason) {
  nav.hidden = true;
  orgForm.hidden = true;
  const box = errorBox();
  const input = h('input', { id: 'api-key', name: 'key', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { class: 'signin', id: 'signin' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'The console acts with a server API key (', h('code', {}, '--api-key'),
      ', or the key in ', h('code', {}, '<data>/api_key'),
      '). It is kept in this browser tab only and forgotten when the tab closes.'),
    h('label', { for: 'api-key' }, 'Server API key'),
    input,
    box,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    session.key = input.value.trim();
    try {
      // A server-only endpoint: a client token is refused (403), a wrong key too (401).
      await get('/v1/projections');
    } catch (error) {
      session.key = null;
      showError(error, box);
      input.select();
      return;
    }
    start();
  });
  fill(main, form);
  if (reason) showError(reason, box);
  input.focus();
}

function signOut(reason) {
  session.key = null;
  signIn(reason);
}

function renderOrgs() {
  orgInput.value = session.org;
  document.getElementById('org-list').replaceChildren(...session.orgs.map((org) => h('option', { value: org })));
}

function start() {
  nav.hidden = false;
  orgForm.hidden = false;
  renderOrgs();
  route();
}

orgForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const org = orgInput.value.trim();
  if (!org) return;
  session.org = org;
  renderOrgs();
  // The same page, in the other organization; a user page goes back to the list.
  if (location.hash.startsWith('#/users/')) location.hash = '#/users';
  else route();
});

// Checkboxes answer Enter as well as Space, so every action is reachable by Tab and Enter.
document.addEventListener('keydown', (event) => {
  const t = event.target;
  if (event.key === 'Enter' && t instanceof HTMLInputElement && t.type === 'checkbox') {
    event.preventDefault();
    t.click();
  }
});

// Whatever fails outside a page's own error handling is still shown, never a blank screen.
window.addEventListener('unhandledrejection', (event) => showError(event.reason));
window.addEventListener('error', (event) => showError(event.error || event.message));

window.addEventListener('hashchange', route);
document.addEventListener('console:signout', () => signOut());

if (session.key) start();
else signIn();
