/**
 * remote-jobqueue-lab: a "Create new cluster" action for dask-labextension's Dask panel and the
 * command palette. The cluster is started by dask-labextension's own manager on the server (see
 * `remote_jobqueue.lab`), so it lists, scales and closes like any other in the panel.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification, showErrorMessage } from '@jupyterlab/apputils';

import { createCluster, listSites } from './api';
import { askForCluster } from './dialog';
import { addCreateButton, showClusterInPanel } from './panel';

import '../style/index.css';

export const CREATE_COMMAND = 'remote-jobqueue:create-cluster';

async function createFromDialog(app: JupyterFrontEnd): Promise<void> {
  let choices;
  try {
    choices = await listSites();
  } catch (error) {
    await showErrorMessage('Cannot list the sites', messageOf(error));
    return;
  }
  const asked = await askForCluster(choices);
  if (!asked) {
    return;
  }
  const note = Notification.emit(
    `Starting a Dask cluster at ${asked.siteLabel}…`,
    'in-progress',
    { autoClose: false }
  );
  try {
    const model = await createCluster(asked.request);
    Notification.update({
      id: note,
      message: `${model.name} is running (${model.scheduler_address})`,
      type: 'success',
      autoClose: 5000
    });
    await showClusterInPanel(app.shell, model.id);
  } catch (error) {
    Notification.dismiss(note);
    await showErrorMessage('Cluster not started', messageOf(error));
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'remote-jobqueue-lab:plugin',
  description: 'Create Dask clusters at remote-jobqueue sites from the Dask panel.',
  autoStart: true,
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null) => {
    app.commands.addCommand(CREATE_COMMAND, {
      label: 'Create new cluster',
      caption: 'Create a Dask cluster at a remote-jobqueue site (or locally)',
      execute: () => createFromDialog(app)
    });
    palette?.addItem({ command: CREATE_COMMAND, category: 'Dask' });
    // Beside dask-labextension's own "Launch New Cluster" in the cluster list's context menu.
    app.contextMenu.addItem({
      command: CREATE_COMMAND,
      selector: '.dask-ClusterListing-list',
      rank: 1.5
    });
    void app.restored.then(() =>
      addCreateButton(app, () => void app.commands.execute(CREATE_COMMAND))
    );
  }
};

export default plugin;
