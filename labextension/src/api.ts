/**
 * The server extension's REST API (`remote_jobqueue.lab`), through ServerConnection so every
 * request carries the XSRF token and authorization JupyterLab uses for its own calls.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One entry of the site picker, as `GET /remote-jobqueue/sites` lists it. */
export interface ISiteChoice {
  value: string;
  label: string;
  /** Unclaimed cores its collector reports; null when it cannot be asked; absent for Local. */
  free_cores?: number | null;
}

export interface IDefaults {
  /** The configured `remote-jobqueue.site`, preselected when it is one of the sites. */
  site?: string;
  cores: number;
  memory: string;
  image: string | null;
}

export interface ISites {
  sites: ISiteChoice[];
  defaults: IDefaults;
}

/** The body of `PUT /remote-jobqueue/clusters`. */
export interface IClusterRequest {
  site: string;
  cores: number;
  memory: string;
  image: string | null;
}

/** dask-labextension's cluster model, as its manager returns it. */
export interface IClusterModel {
  id: string;
  name: string;
  scheduler_address: string;
  dashboard_link: string;
  workers: number;
  memory: string;
  cores: number;
}

/** A refusal by the server, with the message it gave (what the user needs to act on). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function listSites(): Promise<ISites> {
  return request<ISites>('sites', { method: 'GET' });
}

export function createCluster(body: IClusterRequest): Promise<IClusterModel> {
  return request<IClusterModel>('clusters', {
    method: 'PUT',
    body: JSON.stringify(body)
  });
}

async function request<T>(path: string, init: RequestInit): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'remote-jobqueue', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  const data = parse(text);
  if (!response.ok) {
    throw new ApiError(messageOf(data, text, response), response.status);
  }
  return data as T;
}

function parse(text: string): unknown {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** The server's own words: `{"message": ...}` from our handlers and from jupyter_server. */
function messageOf(data: unknown, text: string, response: Response): string {
  if (data && typeof data === 'object' && 'message' in data) {
    const message = (data as { message: unknown }).message;
    if (typeof message === 'string' && message) {
      return message;
    }
  }
  const status = `${response.status} ${response.statusText}`.trim();
  return text && data === null ? `${status}: ${text.slice(0, 500)}` : status;
}
