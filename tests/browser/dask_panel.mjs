// A user's walk through the Dask panel of JupyterLab, in Debian's chromium (headless):
// open the panel, "Create new cluster", pick a site, create, see the cluster and its workers,
// scale it, close it. Settings come from the environment (the token never on a command line):
// LAB_URL, LAB_TOKEN, RJQ_SITE_LABEL, SCREENSHOT_DIR. Prints one JSON line per step.
import { chromium } from "playwright-core";

const url = process.env.LAB_URL;
const token = process.env.LAB_TOKEN;
const siteValue = process.env.RJQ_SITE ?? "T2_A";
const shots = process.env.SCREENSHOT_DIR ?? ".";
const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(60_000);
try {
  // The token goes in a header of every request to the server, not in the page's URL.
  await page.setExtraHTTPHeaders({ Authorization: `token ${token}` });
  await page.goto(`${url}/lab`);
  await page.locator(".jp-LabShell").waitFor();
  step("lab open");

  const tab = page.locator('.lm-TabBar-tab[data-id="dask-dashboard-launcher"]');
  await tab.click();
  await page.locator(".dask-DaskClusterManager").waitFor();
  step("dask panel open");

  await page.locator(".rjq-create-cluster").first().click();
  const site = page.locator("#rjq-site");
  await site.waitFor();
  const options = await site.locator("option").allTextContents();
  step("create dialog", { options });
  await site.selectOption(siteValue);
  await page.locator("#rjq-cores").fill("1");
  await page.locator("#rjq-memory").fill("1 GiB");
  await page.screenshot({ path: `${shots}/create-dialog.png` });
  await page.locator(".jp-Dialog .jp-mod-accept").click();

  const item = page.locator(".dask-ClusterListingItem").first();
  await item.waitFor({ timeout: 180_000 });
  const title = await item.locator(".dask-ClusterListingItem-title").textContent();
  step("cluster listed", { title });

  await item.locator(".dask-ClusterListingItem-scale").click();
  await page.locator(".jp-Dialog .dask-ScalingInput").first().fill("2");
  await page.locator(".jp-Dialog .jp-mod-accept").click();
  await item.getByText("Number of Workers: 2").waitFor({ timeout: 180_000 });
  const stats = await item.locator(".dask-ClusterListingItem-stats").allTextContents();
  step("workers appeared", { stats });
  await page.screenshot({ path: `${shots}/dask-panel-workers.png` });

  await item.locator(".dask-ClusterListingItem-stop").click();
  await page.locator(".dask-ClusterListingItem").waitFor({ state: "detached", timeout: 120_000 });
  step("cluster closed");
} catch (err) {
  await page.screenshot({ path: `${shots}/failure.png` }).catch(() => {});
  step("failed", { error: String(err) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
