/**
 * The demo's advisories: real published records, copied verbatim (test/fixtures/feeds holds the
 * sources they were taken from, and a test compares them): Debian's OSV record of CVE-2023-4911
 * ("Looney Tunables", glibc's ld.so, fixed in Debian 12 at 2.36-9+deb12u3) and the CISA KEV
 * catalogue's entry for it, in a catalogue of that one entry (KEV's own schema, `count` 1).
 *
 * They are code, not data files, so that the installed package carries them (it ships dist/,
 * proto/ and deploy/ only); `shadowlayer demo` writes them out as a feed source (cli/demo-feed.ts).
 */

/** The OSV record's id, and the CVE it and the KEV entry are about. */
export const DEMO_ADVISORY = "DEBIAN-CVE-2023-4911";
export const DEMO_CVE = "CVE-2023-4911";

/** Debian's record as osv.dev serves it. */
export const DEMO_OSV_RECORD = {
  "schema_version": "1.6.0",
  "id": "DEBIAN-CVE-2023-4911",
  "modified": "2024-09-18T03:22:41Z",
  "published": "2023-10-03T18:15:10Z",
  "details": "A buffer overflow was discovered in the GNU C Library's dynamic loader ld.so while processing the GLIBC_TUNABLES environment variable.",
  "aliases": [
    "CVE-2023-4911"
  ],
  "related": [],
  "affected": [
    {
      "package": {
        "name": "glibc",
        "ecosystem": "Debian:12",
        "purl": "pkg:deb/debian/glibc?arch=source"
      },
      "ranges": [
        {
          "type": "ECOSYSTEM",
          "events": [
            {
              "introduced": "0"
            },
            {
              "fixed": "2.36-9+deb12u3"
            }
          ]
        }
      ],
      "versions": [
        "2.36-9",
        "2.36-9+deb12u1",
        "2.36-9+deb12u2"
      ],
      "ecosystem_specific": {
        "urgency": "not yet assigned"
      }
    },
    {
      "package": {
        "name": "glibc",
        "ecosystem": "Debian:13"
      },
      "ranges": [
        {
          "type": "ECOSYSTEM",
          "events": [
            {
              "introduced": "0"
            },
            {
              "fixed": "2.37-12"
            }
          ]
        }
      ]
    }
  ]
};

/** CISA's catalogue (version 2025.08.25) cut to the one entry. */
export const DEMO_KEV_CATALOGUE = {
  "title": "CISA Catalog of Known Exploited Vulnerabilities",
  "catalogVersion": "2025.08.25",
  "dateReleased": "2025-08-25T17:04:19.9796Z",
  "count": 1,
  "vulnerabilities": [
    {
      "cveID": "CVE-2023-4911",
      "vendorProject": "GNU",
      "product": "GNU C Library",
      "vulnerabilityName": "GNU C Library Buffer Overflow Vulnerability",
      "dateAdded": "2023-11-21",
      "shortDescription": "GNU C Library's dynamic loader ld.so contains a buffer overflow vulnerability when processing the GLIBC_TUNABLES environment variable, allowing a local attacker to execute code with elevated privileges.",
      "requiredAction": "Apply mitigations per vendor instructions or discontinue use of the product if mitigations are unavailable.",
      "dueDate": "2023-12-12",
      "knownRansomwareCampaignUse": "Unknown",
      "notes": "This vulnerability affects a common open-source component, third-party library, or a protocol used by different products. Please check with specific vendors for information on patching status. For more information, please see: https://sourceware.org/git/?p=glibc.git;a=commitdiff;h=1056e5b4c3f2d90ed2b4a55f96add28da2f4c8fa, https://access.redhat.com/security/cve/cve-2023-4911, https://www.debian.org/security/2023/dsa-5514 ; https://nvd.nist.gov/vuln/detail/CVE-2023-4911  ",
      "cwes": [
        "CWE-122"
      ]
    }
  ]
};
