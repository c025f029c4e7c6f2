/**
 * dask-labextension's Dask panel, found from outside: it exports no token, so we look for its
 * sidebar widget in the shell (by its id, else its class) and use only its public methods
 * (`clusterManager.refresh()`, `setActiveCluster()`), each checked before it is called.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Toolbar, ToolbarButton } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { PanelLayout, Widget } from '@lumino/widgets';

import cloudAddSvg from '../style/cloud-add.svg';

/** A cloud with a plus: a cluster somewhere else. An icon, as the toolbar has no room for a
 * label at the panel's default width (CLUSTERS, refresh and NEW take 178 of its 235 px). */
export const createClusterIcon = new LabIcon({
  name: 'remote-jobqueue:create-cluster',
  svgstr: cloudAddSvg
});

/** dask-labextension 7's ids and classes. */
const DASK_SIDEBAR_ID = 'dask-dashboard-launcher';
const DASK_SIDEBAR_CLASS = 'dask-DaskSidebar';
const DASK_NEW_CLUSTER_ITEM = 'dask:launch-cluster';
const BUTTON_ITEM = 'remote-jobqueue:create-cluster';

/** What we use of dask-labextension's cluster manager widget. */
interface IDaskClusterManager extends Widget {
  refresh?: () => Promise<void>;
  setActiveCluster?: (id: string) => void;
}

export function findDaskSidebar(shell: JupyterFrontEnd.IShell): Widget | undefined {
  for (const area of ['left', 'right']) {
    for (const widget of shell.widgets(area)) {
      if (widget.id === DASK_SIDEBAR_ID || widget.hasClass(DASK_SIDEBAR_CLASS)) {
        return widget;
      }
    }
  }
  return undefined;
}

function clusterManagerOf(sidebar: Widget): IDaskClusterManager | undefined {
  // Duck-typed: dask-labextension's classes are not ours to import.
  const manager = (sidebar as { clusterManager?: unknown }).clusterManager;
  const isWidget = !!manager && typeof (manager as Widget).node === 'object';
  return isWidget ? (manager as IDaskClusterManager) : undefined;
}

/** The toolbar of the panel's CLUSTERS section (the one with dask's own NEW button). */
function clustersToolbar(sidebar: Widget): Toolbar<Widget> | undefined {
  const manager = clusterManagerOf(sidebar);
  const layout = manager?.layout as PanelLayout | null | undefined;
  const widgets: readonly Widget[] = layout?.widgets ?? [];
  return widgets.find(
    (w): w is Toolbar<Widget> =>
      typeof (w as unknown as Partial<Toolbar<Widget>>).insertAfter === 'function'
  );
}

/**
 * Add our button to the panel's CLUSTERS toolbar, after dask's NEW, once the panel exists
 * (dask-labextension may activate after us, or not be installed: then we give up quietly).
 */
export async function addCreateButton(
  app: JupyterFrontEnd,
  onClick: () => void,
  options: { attempts?: number; intervalMs?: number } = {}
): Promise<boolean> {
  const attempts = options.attempts ?? 120;
  const intervalMs = options.intervalMs ?? 500;
  for (let i = 0; i < attempts; i++) {
    const sidebar = findDaskSidebar(app.shell);
    const toolbar = sidebar && clustersToolbar(sidebar);
    if (toolbar) {
      const button = new ToolbarButton({
        className: 'rjq-create-cluster',
        icon: createClusterIcon,
        tooltip: 'Create new cluster: pick a site, cores, memory and worker image',
        onClick
      });
      if (!toolbar.insertAfter(DASK_NEW_CLUSTER_ITEM, BUTTON_ITEM, button)) {
        toolbar.addItem(BUTTON_ITEM, button);
      }
      return true;
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs));
  }
  console.warn('remote-jobqueue: no Dask panel found; the command palette still has the action');
  return false;
}

/** Make the panel list clusters now (it would otherwise within its 5 s poll), and select one. */
export async function showClusterInPanel(
  shell: JupyterFrontEnd.IShell,
  clusterId: string
): Promise<void> {
  const sidebar = findDaskSidebar(shell);
  const manager = sidebar && clusterManagerOf(sidebar);
  if (!manager || typeof manager.refresh !== 'function') {
    return;
  }
  await manager.refresh();
  if (typeof manager.setActiveCluster === 'function') {
    manager.setActiveCluster(clusterId);
  }
}
