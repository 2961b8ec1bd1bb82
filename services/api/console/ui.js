// Small DOM helpers. Every value from the API enters the page as text (text nodes and
// textContent), never as HTML.

/**
 * Creates an element. `props`: `class`, `on<event>` handlers, boolean attributes as true,
 * other attributes as strings; children: nodes or values shown as text.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Replaces the children of `el` (leaving out null, undefined and false, as `h` does). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** A time as `YYYY-MM-DD HH:MM:SS` UTC (the same on every admin's screen). */
export function time(iso) {
  if (!iso) return '—';
  return String(iso).replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC');
}

/** A value as JSON text in a `<pre>`. */
export function json(value, label) {
  return h('pre', { class: 'json', tabindex: 0, 'aria-label': label }, JSON.stringify(value ?? null, null, 2));
}

/** A status as a badge. */
export function badge(status) {
  return h('span', { class: `badge badge-${status}` }, status);
}

/** A problem (or any error) as title, detail and the fields it names. */
export function problemView(error) {
  const p = (error && error.problem) || { title: 'Something went wrong', detail: String(error) };
  return h('div', { class: 'problem-body' },
    h('strong', { class: 'problem-title' }, p.title || `HTTP ${p.status}`),
    p.detail ? h('span', { class: 'problem-detail' }, ` ${p.detail}`) : null,
    p.code ? h('span', { class: 'problem-code' }, ` (${p.code})`) : null,
    Array.isArray(p.errors) && p.errors.length
      ? h('ul', {}, p.errors.map((e) => h('li', {}, `${e.field}: ${e.message}`)))
      : null);
}

/** Shows an error in `box` (a `.problem` element), or in the page's alert when none given. */
export function showError(error, box = document.getElementById('alert')) {
  fill(box, problemView(error));
  box.hidden = false;
}

/** Hides an error box. */
export function clearError(box = document.getElementById('alert')) {
  box.hidden = true;
  box.replaceChildren();
}

/** An error box for a section (announced to screen readers when it appears). */
export function errorBox() {
  return h('div', { class: 'problem', role: 'alert', hidden: true });
}

/**
 * Runs `action` with `button` disabled meanwhile; shows its error in `box`. Resolves to the
 * action's result, or undefined when it failed.
 */
export async function act(button, box, action) {
  if (button) button.disabled = true;
  clearError(box);
  try {
    return await action();
  } catch (error) {
    showError(error, box);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A table with a caption; `columns` are [header, cell(row)] pairs; the first header labels each cell on a phone. */
export function table(caption, columns, rows, empty = 'None.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map(([title]) => h('th', { scope: 'col' }, title)))),
    h('tbody', {}, rows.map((row) => h('tr', {},
      columns.map(([title, content]) => cell(title, content(row)))))));
}

/** A table cell labelled with its column (the label shows on a phone, where rows become cards). */
export function cell(label, ...children) {
  return h('td', { 'data-label': label }, h('div', {}, children));
}

/** A labelled form control: `<label>text <control></label>`. */
export function field(text, control) {
  return h('label', { class: 'field' }, h('span', {}, text), control);
}

/** A `<select>` of [value, text] options with `selected` chosen. */
export function select(name, options, selected) {
  return h('select', { name },
    options.map(([value, text]) => h('option', { value, selected: value === selected }, text)));
}

/**
 * Asks for confirmation in a modal dialog (keyboard: Tab between the buttons, Enter to
 * choose, Escape to cancel). Resolves to true when confirmed.
 */
export function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button', value: 'cancel' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'danger', value: 'ok' }, confirmLabel);
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, text),
      h('div', { class: 'actions' }, cancel, ok));
    const finish = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    cancel.addEventListener('click', () => finish(false));
    ok.addEventListener('click', () => finish(true));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); finish(false); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** Calls `fn` once `ms` have passed without another call. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A live status line ("Live", "Reconnecting…") for a stream. */
export function liveIndicator() {
  const el = h('span', { class: 'live', role: 'status' }, 'Connecting…');
  el.update = (state, error) => {
    el.dataset.state = state;
    el.textContent = { live: 'Live', reconnecting: 'Reconnecting…', stopped: 'Stopped', paused: 'Paused' }[state] || state;
    if (error && state !== 'live') el.title = error.message;
  };
  return el;
}
