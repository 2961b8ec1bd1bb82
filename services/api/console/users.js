// The users page: search as you type, filters, cursor paging both ways, the total, and bulk
// tasks (deactivate, reactivate, delete, export) over a selection.

import { api, get } from './api.js';
import { h, fill, badge, time, table, field, select, errorBox, showError, clearError, act, confirmDialog, debounce } from './ui.js';

/** The selected user ids; kept while the tab lives, across pages and searches. */
const selected = new Set();

const STATUSES = [['', 'Any status'], ['active', 'Active'], ['blocked', 'Blocked'],
  ['deactivated', 'Deactivated'], ['deleted', 'Deleted']];

export const DELETE_MODES = [
  ['soft', 'Soft', 'marked deleted; everything is kept and can be restored'],
  ['pruning', 'Pruning', 'marked deleted and personal data erased everywhere, the event log included'],
  ['hard', 'Hard', 'erased completely; the id, username and email are released. This cannot be undone'],
];

/** The filters that live in the fragment (#/users?search=…), so Back returns to the same list. */
const KEPT = ['search', 'status', 'role', 'team', 'order', 'limit', 'cursor', 'direction'];

export async function usersPage({ main, signal, params }) {
  const state = Object.fromEntries(KEPT.map((k) => [k, params.get(k) || '']));
  state.order ||= 'asc';
  state.limit ||= '25';

  const box = errorBox();
  const total = h('p', { class: 'total', role: 'status', id: 'users-total' });
  const results = h('div', { id: 'users-results' });
  const bulk = h('div', { class: 'bulk', id: 'bulk' });
  const search = h('input', {
    type: 'search', name: 'search', value: state.search, autocomplete: 'off', spellcheck: 'false',
    placeholder: 'id, username, name or email',
  });
  const status = select('status', STATUSES, state.status);
  const role = h('input', { name: 'role', value: state.role, list: 'roles', autocomplete: 'off', size: 8 });
  const order = select('order', [['asc', 'Oldest first'], ['desc', 'Newest first']], state.order);
  const limit = select('limit', ['10', '25', '50', '100'].map((n) => [n, n]), state.limit);
  const team = h('span', { class: 'team-filter muted', id: 'team-filter' }, 'Teams: checking…');
  const filters = h('form', { class: 'filters', role: 'search' },
    field('Search', search), field('Status', status), field('Role', role),
    h('datalist', { id: 'roles' }, ['user', 'admin', 'guest'].map((r) => h('option', { value: r }))),
    team, field('Order', order), field('Per page', limit));
  fill(main, h('h1', {}, 'Users'), filters, total, bulk, box, results);

  let seq = 0;
  async function load() {
    const mine = ++seq;
    history.replaceState(null, '', `#/users?${new URLSearchParams(Object.entries(state).filter(([, v]) => v))}`);
    let page;
    try {
      page = await get('/v1/users', { ...state, direction: state.cursor ? state.direction : '' });
    } catch (error) {
      if (mine === seq) showError(error, box);
      return;
    }
    if (mine !== seq || signal.aborted) return;
    clearError(box);
    total.textContent = `${page.total} ${page.total === 1 ? 'user' : 'users'}`;
    fill(results, listing(page.users), pager(page));
  }

  function refilter(changes) {
    Object.assign(state, changes, { cursor: '', direction: '' });
    load();
  }

  function pager(page) {
    const go = (cursor, direction) => () => { Object.assign(state, { cursor, direction }); load(); };
    return h('div', { class: 'pager' },
      h('button', { type: 'button', id: 'prev-page', disabled: !page.prev_cursor, onclick: go(page.prev_cursor, 'before') }, '← Previous'),
      h('button', { type: 'button', id: 'next-page', disabled: !page.next_cursor, onclick: go(page.next_cursor, 'after') }, 'Next →'));
  }

  function listing(users) {
    const all = h('input', {
      type: 'checkbox', id: 'select-page', checked: users.length > 0 && users.every((u) => selected.has(u.id)),
      onchange: (e) => {
        for (const u of users) (e.target.checked ? selected.add(u.id) : selected.delete(u.id));
        results.querySelectorAll('input[data-user]').forEach((c) => { c.checked = e.target.checked; });
        renderBulk();
      },
    });
    const pick = (u) => h('input', {
      type: 'checkbox', 'data-user': u.id, 'aria-label': `Select ${u.id}`, checked: selected.has(u.id),
      onchange: (e) => { (e.target.checked ? selected.add(u.id) : selected.delete(u.id)); renderBulk(); },
    });
    const open = (u) => h('a', { href: `#/users/${encodeURIComponent(u.id)}`, class: 'user-link' },
      u.display_name || u.username || u.name || u.id);
    return h('div', {},
      users.length ? h('label', { class: 'check' }, all, ' Select every user on this page') : null,
      table('Users', [
        ['Select', pick], ['User', open], ['Id', (u) => u.id], ['Name', (u) => u.name ?? '—'],
        ['Email', (u) => u.email ?? '—'], ['Status', (u) => badge(u.status)], ['Role', (u) => u.role],
        ['Created', (u) => time(u.created_at)],
      ], users, 'No user matches.'));
  }

  function renderBulk() {
    const mode = select('mode', DELETE_MODES.map(([v, t]) => [v, t]), 'soft');
    const start = (path, body) => async (event) => {
      const accepted = await act(event.currentTarget, box, () => api('POST', path, { body }));
      if (!accepted) return;
      if (body.user_ids) selected.clear();
      location.hash = `#/tasks?started=${encodeURIComponent(accepted.task_id)}`;
    };
    const ids = () => [...selected];
    const remove = async (event) => {
      const [, title, effect] = DELETE_MODES.find(([v]) => v === mode.value);
      const n = selected.size;
      const sure = await confirmDialog(`Delete ${n} ${n === 1 ? 'user' : 'users'}?`,
        `${title} delete: ${effect}.`, `Delete ${n}`);
      if (sure) start('/v1/users/delete', { user_ids: ids(), user: mode.value })(event);
    };
    const n = selected.size;
    fill(bulk,
      h('button', { type: 'button', id: 'export-all', onclick: start('/v1/users/export', {}) }, 'Export all users'),
      n ? h('span', { class: 'bulk-selection' },
        h('strong', { id: 'selected-count' }, `${n} selected`),
        h('button', { type: 'button', id: 'bulk-deactivate', onclick: (e) => start('/v1/users/deactivate', { user_ids: ids() })(e) }, 'Deactivate'),
        h('button', { type: 'button', id: 'bulk-reactivate', onclick: (e) => start('/v1/users/reactivate', { user_ids: ids() })(e) }, 'Reactivate'),
        h('button', { type: 'button', id: 'bulk-export', onclick: (e) => start('/v1/users/export', { user_ids: ids() })(e) }, 'Export'),
        field('Delete mode', mode),
        h('button', { type: 'button', id: 'bulk-delete', class: 'danger', onclick: remove }, 'Delete…'),
        h('button', { type: 'button', id: 'bulk-clear', onclick: () => { selected.clear(); renderBulk(); load(); } }, 'Clear selection'))
        : null);
  }

  const typed = debounce(() => refilter({ search: search.value.trim() }), 200);
  search.addEventListener('input', typed);
  filters.addEventListener('submit', (e) => { e.preventDefault(); refilter({ search: search.value.trim() }); });
  status.addEventListener('change', () => refilter({ status: status.value }));
  role.addEventListener('change', () => refilter({ role: role.value.trim() }));
  order.addEventListener('change', () => refilter({ order: order.value }));
  limit.addEventListener('change', () => refilter({ limit: limit.value }));

  // The organization's teams (docs/teams.md); a server of a release without them answers 404.
  get('/v1/teams', { limit: 100 }).then((page) => {
    const teams = select('team', [['', 'Any team'], ...page.teams.map((t) => [t.id, t.name || t.id])], state.team);
    teams.addEventListener('change', () => refilter({ team: teams.value }));
    team.replaceWith(field('Team', teams));
  }, (error) => {
    team.textContent = error.status === 404 ? 'Teams: not available on this server' : `Teams: ${error.message}`;
  });

  renderBulk();
  await load();
}
