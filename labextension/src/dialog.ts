/**
 * The "Create new cluster" dialog: a form of plain DOM elements (no React), with the stable ids
 * the browser tests use (#rjq-site, #rjq-cores, #rjq-memory, #rjq-image).
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IClusterRequest, ISiteChoice, ISites } from './api';

/** The text of a site's option: its label, and its free cores when the site has a pool. */
export function optionText(site: ISiteChoice): string {
  if (site.free_cores === undefined) {
    return site.label;
  }
  if (site.free_cores === null) {
    return `${site.label} (free cores unknown)`;
  }
  const cores = site.free_cores === 1 ? 'core' : 'cores';
  return `${site.label} (${site.free_cores} free ${cores})`;
}

/** The dialog's body; `getValue` is what the dialog resolves with on OK. */
export class CreateClusterForm
  extends Widget
  implements Dialog.IBodyWidget<IClusterRequest>
{
  constructor(choices: ISites) {
    super({ node: document.createElement('form') });
    this.addClass('rjq-CreateClusterForm');
    // Enter in a field submits the dialog, not this form (which would reload the page).
    this.node.addEventListener('submit', event => event.preventDefault());

    this._site = document.createElement('select');
    this._site.id = 'rjq-site';
    for (const site of choices.sites) {
      this._labels.set(site.value, site.label);
      const option = document.createElement('option');
      option.value = site.value;
      option.textContent = optionText(site);
      this._site.appendChild(option);
    }

    const { defaults } = choices;
    if (defaults.site && choices.sites.some(s => s.value === defaults.site)) {
      this._site.value = defaults.site;
    }
    this._cores = input('rjq-cores', 'number', String(defaults.cores));
    this._cores.min = '1';
    this._cores.step = '1';
    this._memory = input('rjq-memory', 'text', defaults.memory);
    this._memory.placeholder = 'e.g. 4 GiB';
    this._image = input('rjq-image', 'text', defaults.image ?? '');
    this._image.placeholder = "the site's default";

    this.node.append(
      row('Site', this._site),
      row('Cores per worker', this._cores),
      row('Memory per worker', this._memory),
      row('Worker image (optional)', this._image)
    );
  }

  getValue(): IClusterRequest {
    const image = this._image.value.trim();
    return {
      site: this._site.value,
      // A blank or non-numeric field goes as NaN (null in JSON): the server says what it wants.
      cores: this._cores.value.trim() === '' ? NaN : Number(this._cores.value),
      memory: this._memory.value.trim(),
      image: image || null
    };
  }

  /** The label of the chosen site, for messages. */
  get siteLabel(): string {
    return this._labels.get(this._site.value) ?? this._site.value;
  }

  private _labels = new Map<string, string>();
  private _site: HTMLSelectElement;
  private _cores: HTMLInputElement;
  private _memory: HTMLInputElement;
  private _image: HTMLInputElement;
}

/** Ask for a cluster; resolves with the request, or null when the user cancels. */
export async function askForCluster(
  choices: ISites
): Promise<{ request: IClusterRequest; siteLabel: string } | null> {
  const form = new CreateClusterForm(choices);
  const result = await showDialog<IClusterRequest>({
    title: 'Create new cluster',
    body: form,
    focusNodeSelector: '#rjq-site',
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Create' })]
  });
  if (!result.button.accept || result.value === null) {
    return null;
  }
  return { request: result.value, siteLabel: form.siteLabel };
}

function input(id: string, type: string, value: string): HTMLInputElement {
  const element = document.createElement('input');
  element.id = id;
  element.type = type;
  element.value = value;
  element.className = 'jp-mod-styled';
  return element;
}

function row(text: string, control: HTMLElement): HTMLElement {
  const label = document.createElement('label');
  label.className = 'rjq-CreateClusterForm-row';
  label.htmlFor = control.id;
  const caption = document.createElement('span');
  caption.textContent = text;
  label.append(caption, control);
  return label;
}
